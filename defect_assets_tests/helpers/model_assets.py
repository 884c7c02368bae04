"""Batch assets, tiny training settings and prepared synthetic batches for the model assets."""

from __future__ import annotations

import dagster as dg

from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.models.assets import backbone_features
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import augmented_training_set, labeled_patches
from defect_assets.defs.resources import default_resources
from defect_assets.ml.synthetic import write_synthetic_surfaces
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder

BATCH_ASSETS = [raw_images, image_labels, labeled_patches, augmented_training_set, backbone_features]

TINY = {"ops": {
    "labeled_patches": {"config": {"size": 32, "negatives_per_positive": 1.5}},
    "backbone_features": {"config": {"blocks": [2]}},
    "scratch_cnn_model": {"config": {"filters": [8, 16], "epochs": 3, "images_per_epoch": 1024, "batch_size": 32,
                                     "train_angle_step": 15}},
    "fine_tuned_vgg16_model": {"config": {"cut_block": 2, "epochs": 2, "fine_tune_epochs": 1,
                                          "images_per_epoch": 512, "batch_size": 32}},
    "elastic_net_model": {"config": {"search_C": [0.05, 0.5]}},
    "ensemble_model": {"config": {"weight_steps": 2}},
    "anomaly_model": {"config": {"coreset_size": 500}},
}}


def prepared_batches(root, names: list[str], first_seed: int, n_images: int):
    """Synthetic surface batches uploaded and built (patches, augmented sets, features) with
    tiny settings. Returns (instance, resources, landing)."""
    instance = dg.DagsterInstance.ephemeral()
    resources = default_resources(root / "data")
    landing = LocalObjectStore(root / "data" / "landing")
    for i, b in enumerate(names):
        write_synthetic_surfaces(root / b, n_images=n_images, seed=first_seed + i, width=256, height=192,
                                 defects_per_image=(2, 3))
        upload_folder(root / b, landing, b)
    instance.add_dynamic_partitions(BATCHES, names)
    cfg = {"ops": {k: v for k, v in TINY["ops"].items() if k in ("labeled_patches", "backbone_features")}}
    for b in names:
        assert dg.materialize(BATCH_ASSETS, partition_key=b, instance=instance, resources=resources,
                              run_config=cfg).success
    return instance, resources, landing
