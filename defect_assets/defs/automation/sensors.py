"""retrain_sensor: when new batches (or new labels) have been built into patches and features,
train, evaluate, pick the champion (and deploy, where that asset exists) without anyone
clicking, at most once per minimum interval so a burst of uploads retrains once.

The cursor holds the newest upstream materialization it acted on (an event-log storage id, not
the clock) and when it last asked for a run; the interval is only a rate limit.

Why a sensor and not an ``AutomationCondition`` (what follows training is declarative, see
``conditions.py``): the throttle is rolling (at most once per interval since the last request, the
first batch after a quiet period at once), where ``on_cron`` is clock-aligned and waits for every
input to update; and a retraining is one ``retrain_job`` run with the training tag the production
instance limits to one at a time, tagged with the event it answers, where asset conditions launch
runs of whatever each tick selected and job conditions are ``@preview`` in Dagster 1.13."""

import json
import time

import dagster as dg

from defect_assets.defs.jobs import retrain_job
from defect_assets.pipeline.settings import PipelineSettings

MIN_INTERVAL_ENV = PipelineSettings.env("retrain_min_interval_minutes")
TICK_ENV = PipelineSettings.env("retrain_sensor_interval_seconds")
UPSTREAM_EVENT_TAG = "defect_assets/upstream_event"
UPSTREAM = ("augmented_training_set", "backbone_features", "image_labels")


def tick_seconds() -> int:
    """Seconds between ticks (default 60); each tick reads the newest upstream event only."""
    return PipelineSettings.load().retrain_sensor_interval_seconds


def min_interval_minutes() -> float:
    return PipelineSettings.load().retrain_min_interval_minutes


def newest_upstream(instance: dg.DagsterInstance) -> int:
    """Storage id of the newest materialization of any partition of the training inputs."""
    newest = 0
    for key in UPSTREAM:
        res = instance.fetch_materializations(dg.AssetKey(key), limit=1, ascending=False)
        if res.records:
            newest = max(newest, res.records[0].storage_id)
    return newest


DRIFT_ASSET = "batch_drift"


def new_batches(instance: dg.DagsterInstance, after: int) -> set[str]:
    """The batches with a training input materialized after event ``after``."""
    out = set()
    for key in UPSTREAM:
        res = instance.fetch_materializations(dg.AssetRecordsFilter(dg.AssetKey(key), after_storage_id=after),
                                              limit=1000)
        out |= {r.partition_key for r in res.records if r.partition_key}
    return out


def held_back(instance: dg.DagsterInstance, after: int) -> dict[str, str]:
    """{batch: reason} of the batches with training inputs newer than event ``after`` whose newest
    ``batch_drift`` says they differ from training, with no label version of theirs since (labeling
    some of their images releases them)."""
    held = {}
    for batch in sorted(new_batches(instance, after)):
        drift = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(DRIFT_ASSET), asset_partitions=[batch]), limit=1, ascending=False)
        if not drift.records:
            continue
        rec = drift.records[0]
        meta = rec.asset_materialization.metadata if rec.asset_materialization else {}
        differs = meta.get("differs")
        if not (differs is not None and getattr(differs, "value", differs)):
            continue
        labels = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("image_labels"), asset_partitions=[batch],
                                  after_storage_id=rec.storage_id), limit=1)
        if not labels.records:
            reason = meta.get("reason")
            held[batch] = str(getattr(reason, "value", reason) or "its images differ from training")
    return held


def build_retrain_sensor(job=retrain_job) -> dg.SensorDefinition:
    """The sensor for ``job`` (the code location's retrain_job; a test may pass another one)."""

    @dg.sensor(name="retrain_sensor", job=job, minimum_interval_seconds=tick_seconds(),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Retrains, evaluates and picks the champion when new batches or labels were built "
                           f"(at most once per ${MIN_INTERVAL_ENV} minutes, default 60).")
    def retrain_sensor(context: dg.SensorEvaluationContext):
        state = json.loads(context.cursor) if context.cursor else {"upstream": None, "requested_at": 0.0}
        newest = newest_upstream(context.instance)
        if state["upstream"] is None:
            # First tick: whatever exists was built by a run that trains on its own (e.g. the main job);
            # remember it and react to what comes next.
            context.update_cursor(json.dumps({"upstream": newest, "requested_at": 0.0}))
            return dg.SkipReason(f"first tick: watching training inputs from event {newest}")
        if newest <= state["upstream"]:
            return dg.SkipReason("no new batch or label since the last retraining request")
        held = held_back(context.instance, state["upstream"])
        if held and set(held) >= new_batches(context.instance, state["upstream"]):
            context.update_cursor(json.dumps({**state, "upstream": newest}))
            return dg.SkipReason("held back from retraining: " + "; ".join(f"batch {b}: {r}" for b, r in held.items()))
        wait = min_interval_minutes() * 60 - (time.time() - state["requested_at"])
        if wait > 0:
            return dg.SkipReason(f"new training data; retraining waits {wait / 60:.1f} more minute(s) "
                                 "(minimum interval)")
        context.update_cursor(json.dumps({"upstream": newest, "requested_at": time.time()}))
        return dg.RunRequest(run_key=f"retrain-{newest}", tags={UPSTREAM_EVENT_TAG: str(newest)})

    return retrain_sensor


retrain_sensor = build_retrain_sensor()
