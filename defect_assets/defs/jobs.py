"""Jobs: the per-batch data preparation (ingest -> labels -> patches -> augmented set)."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "prepare_batch_job",
    selection=dg.AssetSelection.groups("ingest", "patches"),
    description="Ingest one landing-zone batch and build its labeled patches and augmented training set.",
)
