"""The defect_assets code location: one Definitions object, built from the stage folders."""

import dagster as dg

from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.jobs import ingest_job
from defect_assets.defs.patches.assets import augmented_training_set, labeled_patches
from defect_assets.defs.resources import default_resources

defs = dg.Definitions(
    assets=[raw_images, image_labels, labeled_patches, augmented_training_set],
    jobs=[ingest_job],
    resources=default_resources(),
)
