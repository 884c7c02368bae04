"""The defect_assets code location: one Definitions object, built from the stage folders."""

import dagster as dg

from defect_assets.defs.active_learning.assets import labeling_queue, unlabeled_pool
from defect_assets.defs.active_learning.sensors import new_labels_sensor
from defect_assets.defs.automation.schedules import daily_monitoring_schedule, nightly_retrain_schedule
from defect_assets.defs.automation.sensors import retrain_sensor
from defect_assets.defs.deploy.assets import deployed_endpoint
from defect_assets.defs.evaluation.assets import build_evaluation_assets
from defect_assets.defs.evaluation.checks import champion_checks
from defect_assets.defs.evaluation.mistakes import champion_test_predictions
from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.jobs import build_jobs
from defect_assets.defs.landing.sensors import landing_zone_sensor
from defect_assets.defs.models.assets import backbone_features, build_model_assets
from defect_assets.defs.monitoring.assets import prediction_monitoring
from defect_assets.defs.patches.assets import augmented_training_set, labeled_patches
from defect_assets.defs.resources import default_resources


def build_defs() -> dg.Definitions:
    """The code location; the model, evaluation and champion assets and the training job are built
    from the model families registered at this point (``pipeline.family_registry``)."""
    return dg.Definitions(
        assets=[raw_images, image_labels, labeled_patches, augmented_training_set, backbone_features,
                *build_model_assets(), *build_evaluation_assets(), champion_test_predictions, deployed_endpoint,
                prediction_monitoring, unlabeled_pool, labeling_queue],
        asset_checks=champion_checks,
        jobs=build_jobs(),
        sensors=[landing_zone_sensor, retrain_sensor, new_labels_sensor],
        schedules=[nightly_retrain_schedule, daily_monitoring_schedule],
        resources=default_resources(),
    )


defs = build_defs()
