"""The defect_assets code location: one Definitions object, built from the stage folders."""

import dagster as dg

from defect_assets.defs.automation.schedules import nightly_retrain_schedule
from defect_assets.defs.automation.sensors import retrain_sensor
from defect_assets.defs.deploy.assets import deploy_job, deployed_endpoint
from defect_assets.defs.evaluation.assets import champion_model, evaluation_assets, evaluation_history
from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.jobs import evaluate_job, ingest_job, retrain_job, train_models_job
from defect_assets.defs.landing.sensors import landing_zone_sensor
from defect_assets.defs.models.assets import (
    backbone_features,
    elastic_net_model,
    fine_tuned_vgg16_model,
    scratch_cnn_model,
)
from defect_assets.defs.patches.assets import augmented_training_set, labeled_patches
from defect_assets.defs.resources import default_resources

defs = dg.Definitions(
    assets=[raw_images, image_labels, labeled_patches, augmented_training_set, backbone_features,
            scratch_cnn_model, fine_tuned_vgg16_model, elastic_net_model, *evaluation_assets,
            evaluation_history, champion_model, deployed_endpoint],
    jobs=[ingest_job, train_models_job, evaluate_job, deploy_job, retrain_job],
    sensors=[landing_zone_sensor, retrain_sensor],
    schedules=[nightly_retrain_schedule],
    resources=default_resources(),
)
