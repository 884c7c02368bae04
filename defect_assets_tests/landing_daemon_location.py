"""A small code location for the dagster-daemon test: the real landing_zone_sensor and the real
resources (chosen by environment variables), with prepare_batch_job cut down to ingestion so a
run takes seconds (the full job's model features are tested elsewhere)."""

import dagster as dg

from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.landing.sensors import build_landing_zone_sensor
from defect_assets.defs.resources import default_resources

ingest_only_job = dg.define_asset_job("prepare_batch_job", selection=dg.AssetSelection.groups("ingest"))

defs = dg.Definitions(
    assets=[raw_images, image_labels],
    sensors=[build_landing_zone_sensor(ingest_only_job)],
    resources=default_resources(),
)
