"""Jobs: per-batch data preparation, re-preparation after new labels, training of every model
family, evaluation, deployment, retraining (training through deployment and the next labeling
queue) and daily prediction monitoring. Referenced as objects by the sensors, the schedules and
the main job. ``train_models_job`` selects the model asset of every registered family, so it is
built with the definitions (``build_jobs``)."""

import dagster as dg

from defect_assets.pipeline.family_registry import families

# the production instance (deploy/dagster.yaml) runs at most one run with this tag at a time
COMPUTE_TAG = "defect_assets/compute"
TRAINING_TAGS = {COMPUTE_TAG: "training"}

prepare_batch_job = dg.define_asset_job(
    "prepare_batch_job",
    selection=(dg.AssetSelection.groups("ingest", "patches")
               | dg.AssetSelection.assets("backbone_features", "unlabeled_pool", "batch_drift")),
    description="Ingest one landing-zone batch: labels, patches, augmented set, backbone features, the "
                "unlabeled pool and the batch's input drift.",
)

relabel_batch_job = dg.define_asset_job(
    "relabel_batch_job",
    selection=dg.AssetSelection.assets("image_labels", "labeled_patches", "augmented_training_set",
                                       "backbone_features", "unlabeled_pool"),
    description="Rebuild one batch after labels arrived from the labeling page: labels (a new label version), "
                "patches, augmented set, backbone features and the unlabeled pool (the images stay as ingested).",
)

TRAIN_MODELS_JOB = "train_models_job"


def build_train_models_job():
    """The model asset of every family registered now."""
    return dg.define_asset_job(
        TRAIN_MODELS_JOB,
        selection=dg.AssetSelection.assets(*(f.asset for f in families())),
        description="Train every model family on every built batch and register them.",
        tags=TRAINING_TAGS,
    )

evaluate_job = dg.define_asset_job(
    "evaluate_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Evaluate every family on the test split, append the history, pick and check the champion.",
)

deploy_job = dg.define_asset_job(
    "deploy_job",
    selection=dg.AssetSelection.assets("deployed_endpoint"),
    description="Promote the current champion (if its checks passed) and check the scoring service serves it.",
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=(dg.AssetSelection.groups("models", "evaluation", "deploy")
               - dg.AssetSelection.assets("backbone_features")) | dg.AssetSelection.assets("labeling_queue"),
    description="Retrain every family, evaluate them, pick the champion behind its checks, deploy it, and score "
                "the next labeling queue with it.",
    tags=TRAINING_TAGS,
)

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.assets("prediction_monitoring"),
    description="Summarize one day of the prediction log: volume, latency, share called defective, score drift.",
)



def build_jobs() -> list:
    """Every job of the code location (called when the definitions are built)."""
    return [prepare_batch_job, relabel_batch_job, build_train_models_job(), evaluate_job, deploy_job, retrain_job,
            monitoring_job]
