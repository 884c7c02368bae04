"""Schedules: nightly retraining and re-evaluation, and daily prediction monitoring."""

import datetime as dt

import dagster as dg

from defect_assets.defs.jobs import monitoring_job, retrain_job
from defect_assets.pipeline.settings import PipelineSettings

CRON_ENV = PipelineSettings.env("nightly_cron")
MONITORING_CRON_ENV = PipelineSettings.env("monitoring_cron")


def build_nightly_retrain_schedule(job=retrain_job) -> dg.ScheduleDefinition:
    """Off by default; the cron expression and time zone come from the environment."""
    settings = PipelineSettings.load()
    return dg.ScheduleDefinition(
        name="nightly_retrain_schedule",
        job=job,
        cron_schedule=settings.nightly_cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Every night: retrain every family on every batch, re-evaluate, pick the champion.",
    )


def build_daily_monitoring_schedule(job=monitoring_job) -> dg.ScheduleDefinition:
    """Running by default: shortly after midnight UTC, the day that just ended (complete now:
    a prediction log segment is written within a second of its records)."""

    @dg.schedule(name="daily_monitoring_schedule", job=job,
                 cron_schedule=PipelineSettings.load().monitoring_cron, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Every day: summarize yesterday's (UTC) prediction log, with its drift check.")
    def daily_monitoring_schedule(context: dg.ScheduleEvaluationContext):
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        day = (now.astimezone(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"monitoring-{day}", partition_key=day)

    return daily_monitoring_schedule


nightly_retrain_schedule = build_nightly_retrain_schedule()
daily_monitoring_schedule = build_daily_monitoring_schedule()
