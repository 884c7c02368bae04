"""new_labels_sensor: labels saved from the labeling page (immutable events in the artifact
store) re-materialize the affected batch's labels, patches, features and pool
(``relabel_batch_job``); the retrain sensor then retrains as it does for new uploads, under
its rate limit.

The cursor is what was seen (batch -> digest of its event keys), never the clock; the run key
is ``labels:<batch>:<digest>``, so a repeated tick asks for nothing new, and a batch whose latest
``image_labels`` was already built from these very events (its ``label_events`` metadata) is
not rebuilt.

A sensor, not an ``AutomationCondition``: the labels are events outside Dagster (objects in the
artifact store), which automation conditions cannot see, like the landing zone's batches."""

import json

import dagster as dg

from defect_assets.defs.ingest.assets import LABEL_EVENTS_METADATA
from defect_assets.defs.jobs import relabel_batch_job
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline.settings import PipelineSettings
from defect_assets.storage.labeling import LabelLog

INTERVAL_ENV = PipelineSettings.env("labels_sensor_interval_seconds")
LABEL_EVENTS_TAG = "defect_assets/label_events"


def interval_seconds() -> int:
    """Seconds between ticks (default 30): each tick lists the label events once."""
    return PipelineSettings.load().labels_sensor_interval_seconds


def built_from(instance: dg.DagsterInstance, batch: str) -> str | None:
    """The label-event digest the latest image_labels of this batch was built from."""
    res = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("image_labels"), asset_partitions=[batch]), limit=1,
        ascending=False)
    if not res.records:
        return None
    value = res.records[0].asset_materialization.metadata.get(LABEL_EVENTS_METADATA)
    return None if value is None else str(value.value)


def build_new_labels_sensor(job=relabel_batch_job) -> dg.SensorDefinition:
    """The sensor for ``job`` (the code location's relabel_batch_job; a test may pass another one)."""

    @dg.sensor(name="new_labels_sensor", job=job, minimum_interval_seconds=interval_seconds(),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Rebuilds a batch's labels, patches, features and unlabeled pool when the labeling "
                           "page saved new labels for it (retraining follows through retrain_sensor).")
    def new_labels_sensor(context: dg.SensorEvaluationContext, artifact_store: StorageResource) -> dg.SensorResult:
        current = LabelLog(artifact_store.open()).digests()
        seen = json.loads(context.cursor) if context.cursor else {}
        changed = {b: d for b, d in current.items() if seen.get(b) != d}
        known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
        unknown = sorted(b for b in changed if b not in known)
        for b in unknown:
            context.log.warning(f"labels for batch {b!r}, which is not a partition of 'batches': ignored")
        todo = {b: d for b, d in changed.items() if b in known and built_from(context.instance, b) != d}
        # a batch that is not a partition yet stays unseen, so it is picked up once it is one
        cursor = json.dumps({b: d for b, d in current.items() if b in known}, sort_keys=True)
        if not todo:
            return dg.SensorResult(skip_reason=f"no new labels ({len(current)} batch(es) with labels)",
                                   cursor=cursor)
        context.log.info(f"new labels for {', '.join(todo)}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"labels:{b}:{d}", partition_key=b, tags={LABEL_EVENTS_TAG: d})
                          for b, d in todo.items()],
            cursor=cursor)

    return new_labels_sensor


new_labels_sensor = build_new_labels_sensor()
