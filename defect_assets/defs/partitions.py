"""Batches of images are dynamic partitions: one per landing-zone batch."""

import dagster as dg

BATCHES = "batches"
batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)
