"""landing_zone_sensor: complete batches in the landing zone (local folder or Blob container,
through the ObjectStore interface only) become dynamic partitions and runs of prepare_batch_job.

A batch counts once its ``_manifest.json`` exists (written last), so a half-uploaded batch never
triggers. The cursor is what was seen (batch -> manifest etag), never the clock, and each run
key is ``<batch>:<etag>``: a tick evaluated again after a crash asks for the same run keys (the
daemon launches each key once), and a re-uploaded batch has a new etag, hence one new run.
"""

import json

import dagster as dg

from defect_assets.defs.jobs import prepare_batch_job
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline.settings import PipelineSettings
from defect_assets.storage.batches import list_batches

INTERVAL_ENV = PipelineSettings.env("landing_sensor_interval_seconds")
ETAG_TAG = "defect_assets/manifest_etag"


def interval_seconds() -> int:
    """Seconds between ticks (default 30): each tick lists the landing zone once."""
    return PipelineSettings.load().landing_sensor_interval_seconds


def seen_batches(cursor: str | None) -> dict[str, str]:
    """The cursor's batch -> manifest etag map ({} for a first tick)."""
    if not cursor:
        return {}
    doc = json.loads(cursor)
    if not isinstance(doc, dict):
        raise ValueError(f"landing_zone_sensor cursor is not a batch -> etag object: {cursor[:200]!r}")
    return {str(k): str(v) for k, v in doc.items()}


def already_built(instance: dg.DagsterInstance, batch: str, etag: str) -> bool:
    """A successful run of this batch's partition tagged with this manifest etag exists."""
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": batch, ETAG_TAG: etag},
                                           statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    return len(runs) > 0


def build_landing_zone_sensor(job=prepare_batch_job) -> dg.SensorDefinition:
    """The sensor for ``job`` (the code location's prepare_batch_job; a test may pass a smaller one)."""

    @dg.sensor(
        name="landing_zone_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds(),
        description="Registers every complete landing-zone batch (manifest present) as a partition of "
                    "'batches' and runs prepare_batch_job for it; again when the batch is re-uploaded.",
    )
    def landing_zone_sensor(context: dg.SensorEvaluationContext, landing_zone: StorageResource) -> dg.SensorResult:
        """One tick: list complete batches, request a run for each new or changed manifest."""
        current = list_batches(landing_zone.open())
        seen = seen_batches(context.cursor)
        changed = {b: etag for b, etag in sorted(current.items()) if seen.get(b) != etag}
        known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
        new_partitions = [b for b in changed if b not in known]
        # A batch already built at this very manifest (by the main job, or before a cursor reset)
        # needs no second run: only its partition is registered.
        done = [b for b, etag in changed.items() if already_built(context.instance, b, etag)]
        changed = {b: etag for b, etag in changed.items() if b not in done}
        cursor = json.dumps(current, sort_keys=True)
        if done and not changed:
            return dg.SensorResult(skip_reason=f"already built at their current manifest: {', '.join(done)}",
                                   dynamic_partitions_requests=[batch_partitions.build_add_request(new_partitions)]
                                   if new_partitions else [], cursor=cursor)
        if not changed:
            return dg.SensorResult(skip_reason=f"no new or re-uploaded batch ({len(current)} complete)", cursor=cursor)
        context.log.info(f"landing zone: {len(changed)} new or re-uploaded batch(es): {', '.join(changed)}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{b}:{etag}", partition_key=b, tags={ETAG_TAG: etag})
                          for b, etag in changed.items()],
            dynamic_partitions_requests=[batch_partitions.build_add_request(new_partitions)] if new_partitions else [],
            cursor=cursor,
        )

    return landing_zone_sensor


landing_zone_sensor = build_landing_zone_sensor()
