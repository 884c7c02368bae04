"""Schedules: nightly retraining and re-evaluation (the daily monitoring schedule joins when the
prediction-monitoring asset exists)."""

import os

import dagster as dg

from defect_assets.defs.jobs import retrain_job

CRON_ENV = "DEFECT_ASSETS_NIGHTLY_CRON"


def build_nightly_retrain_schedule(job=retrain_job) -> dg.ScheduleDefinition:
    """Off by default; the cron expression and time zone come from the environment."""
    return dg.ScheduleDefinition(
        name="nightly_retrain_schedule",
        job=job,
        cron_schedule=os.environ.get(CRON_ENV, "0 2 * * *"),
        execution_timezone=os.environ.get("DEFECT_ASSETS_TIMEZONE", "UTC"),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Every night: retrain every family on every batch, re-evaluate, pick the champion.",
    )


nightly_retrain_schedule = build_nightly_retrain_schedule()
