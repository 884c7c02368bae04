"""Partitions: batches of images are dynamic partitions (one per landing-zone batch); the
prediction log is summarized per UTC day (today included, so the day so far can be looked at;
the daily schedule re-runs each day once it is complete)."""

import dagster as dg

BATCHES = "batches"
batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)

MONITORING_START = "2026-11-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=MONITORING_START, timezone="UTC", end_offset=1)
