"""Partitions: batches of images are dynamic partitions (one per landing-zone batch); the
prediction log is summarized per UTC day (today included, so the day so far can be looked at;
the daily schedule re-runs each day once it is complete)."""

import dagster as dg

BATCHES = "batches"
batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)

MONITORING_START = "2026-11-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=MONITORING_START, timezone="UTC", end_offset=1)


def check_day_partition(key: str) -> str:
    """A run tagged with a day outside ``daily_partitions`` (a typo, 2099-01-01, a day to come) fails
    here with the reason, before it reads or writes anything."""
    try:
        known = daily_partitions.has_partition_key(key)
    except ValueError:  # not even a date
        known = False
    if not known:
        raise dg.Failure(f"partition {key!r} is not a day of the daily partitions: UTC days (YYYY-MM-DD) from "
                         f"{MONITORING_START} to today")
    return key
