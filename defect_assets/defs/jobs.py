"""Jobs: per-batch data preparation, and training of the three model families on every batch."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "prepare_batch_job",
    selection=dg.AssetSelection.groups("ingest", "patches") | dg.AssetSelection.assets("backbone_features"),
    description="Ingest one landing-zone batch: labels, patches, augmented set and backbone features.",
)

train_models_job = dg.define_asset_job(
    "train_models_job",
    selection=dg.AssetSelection.assets("scratch_cnn_model", "fine_tuned_vgg16_model", "elastic_net_model"),
    description="Train the three model families on every built batch and register them.",
)

evaluate_job = dg.define_asset_job(
    "evaluate_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Evaluate every family on the test split, append the history, pick and check the champion.",
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.groups("models", "evaluation", "deploy") - dg.AssetSelection.assets("backbone_features"),
    description="Retrain the three families, evaluate them, pick the champion behind its checks (and deploy it).",
)
