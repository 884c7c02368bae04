"""Jobs: the per-batch data preparation (ingest -> labels -> patches -> augmented set)."""

import dagster as dg

from defect_assets.defs.partitions import batch_partitions

ingest_job = dg.define_asset_job(
    "prepare_batch_job",
    selection=dg.AssetSelection.groups("ingest", "patches"),
    partitions_def=batch_partitions,
    description="Ingest one landing-zone batch and build its labeled patches and augmented training set.",
)
