"""Schedules: nightly retraining and re-evaluation (the daily monitoring schedule joins when the
prediction-monitoring asset exists)."""

import os

import dagster as dg

from defect_assets.defs.automation.sensors import RETRAIN_JOB

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job_name=RETRAIN_JOB,
    cron_schedule=os.environ.get("DEFECT_ASSETS_NIGHTLY_CRON", "0 2 * * *"),
    execution_timezone=os.environ.get("DEFECT_ASSETS_TIMEZONE", "UTC"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every night: retrain the three families on every batch, re-evaluate, pick the champion.",
)
