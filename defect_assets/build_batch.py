"""`defect-assets build BATCH`: what the landing-zone sensor would run for an uploaded batch, in this
process and without a daemon: the batch's dynamic partition registered, then prepare_batch_job on that
partition, tagged with the manifest's etag (so the sensor, when it runs later, sees it as built)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import dagster as dg

STEP_WORDS = ("Started execution of step", "Finished execution of step", "Execution of step")


class _StepProgress(logging.Handler):
    """Passes each step's start, end and failure message to ``say`` (nothing else of the run's log)."""

    def __init__(self, say: Callable[[str], None]):
        super().__init__(level=logging.DEBUG)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for word in STEP_WORDS:
            at = msg.find(word)
            if at >= 0:
                self.say(f"  {msg[at:]}")
                return


def _progress_logger(say: Callable[[str], None]) -> dg.LoggerDefinition:
    @dg.logger(description="the step-by-step progress of `defect-assets build`")
    def progress(_init_context):
        log = logging.getLogger("defect_assets.build")
        log.handlers = [_StepProgress(say)]
        log.setLevel(logging.DEBUG)
        log.propagate = False
        return log

    return progress


def build_batch(batch: str, say: Callable[[str], None] = print) -> dg.ExecuteInProcessResult:
    """Register ``batch`` (a complete landing-zone batch) and materialize prepare_batch_job for it,
    exactly the run the landing-zone sensor requests: same job, partition key and etag tag, no run config.
    Raises ``LookupError`` when the landing zone has no complete batch of that name."""
    from defect_assets.definitions import build_defs
    from defect_assets.defs.jobs import prepare_batch_job
    from defect_assets.defs.landing.sensors import ETAG_TAG, already_built
    from defect_assets.defs.partitions import batch_partitions
    from defect_assets.demo import _instance
    from defect_assets.storage.batches import list_batches

    defs = build_defs()
    landing = defs.resources["landing_zone"].open()
    batches = list_batches(landing)
    if batch not in batches:
        known = ", ".join(sorted(batches)) or "none"
        raise LookupError(f"no complete batch {batch!r} in {landing.url} (complete batches: {known}); "
                          f"upload it first with `defect-assets upload FOLDER --batch {batch}`")
    etag = batches[batch]
    instance = _instance()
    if batch not in instance.get_dynamic_partitions(batch_partitions.name):
        instance.add_dynamic_partitions(batch_partitions.name, [batch])
        say(f"registered partition {batch!r} of {batch_partitions.name!r}")
    if already_built(instance, batch, etag):
        say(f"note: {batch} was already built at this manifest; building it again")
    job = defs.resolve_job_def(prepare_batch_job.name)
    say(f"materializing {prepare_batch_job.name} for {batch} in this process (Dagster instance "
        f"{instance.root_directory}) ...")
    t0 = time.perf_counter()
    # the job's own loggers replaced by one that prints each step's start and end (and a failure's reason)
    job = job.with_logger_defs({"progress": _progress_logger(say)})
    result = job.execute_in_process(instance=instance, partition_key=batch, tags={ETAG_TAG: etag},
                                    run_config={"loggers": {"progress": {}}}, raise_on_error=False)
    seconds = time.perf_counter() - t0
    if result.success:
        keys = sorted({ev.asset_key.to_user_string() for ev in result.get_asset_materialization_events()})
        say(f"built {batch} in {seconds:.1f}s (run {result.run_id}): {', '.join(keys)}")
    else:
        for ev in result.all_events:
            if ev.is_failure:
                say(f"  FAILED: {ev.message}")
        from defect_assets.demo import dagster_ui

        ui = dagster_ui(instance)
        say(f"building {batch} failed; every step of run {result.run_id} is at {ui.run_url(result.run_id)} {ui.how()}")
    return result

