"""The settings of each model family: plain pydantic models (no Dagster), what the training
functions in ``pipeline/families.py`` take, typed. Every attribute's docstring is its field's
description; ``defs/models/families.py`` turns each model into the asset's Dagster ``Config``
(plus where it trains), so the launchpad shows the same descriptions, defaults and choices."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class FamilySettings(BaseModel):
    """The base of every family's settings: unknown keys are refused, docstrings describe fields."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")


class ElasticNetConfig(FamilySettings):
    task: Literal["binary", "multiclass"] = "binary"
    """'binary' (defect or not) or 'multiclass' (every label, e.g. ELPV's 4 levels)."""
    C: float = 0.02
    l1_ratio: float = 0.5
    class_weight_balanced: bool = True
    search_C: list[float] = [0.005, 0.01, 0.02, 0.05, 0.2]
    """Candidates tried (every trial is recorded); empty: just C."""
    search_l1_ratio: list[float] = []
    train_views: int = 1
    """Views of each training patch used as rows (1, 2, 4 or 8; backbone_features must hold them)."""
    test_time_views: int = 1
    """Views whose probabilities are averaged at validation, evaluation and serving (the scorer's
    ``inference.views``): 8 costs 8 backbone passes per image."""
    soft_labels: bool = False
    """Binary task: learn the numeric label itself (ELPV's defect probability 0, 1/3, 2/3, 1) as a
    soft target instead of the thresholded class (cross-entropy against p, by weighted rows)."""
    seed: int = 0
    shuffle_labels: bool = False
    """Sanity check only: train on permuted labels (the model must then lose to any real one)."""


class KerasTrainConfig(FamilySettings):
    task: Literal["binary", "multiclass"] = "binary"
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 30
    images_per_epoch: int = 8192
    """Augmented images drawn per epoch (the 48x set is large; 0 = all of it)."""
    train_angle_step: int = 90
    """Use the augmented views whose angle is a multiple of this: 90 keeps quarter turns and
    mirrors (8 views; ELPV cells are axis-aligned), 15 keeps all 48 (orientation-free defects
    such as dents)."""
    patience: int = 8
    time_budget_seconds: float = 150
    """Stop training (keeping the best epoch on validation) before an epoch would end past this many
    seconds per trial; 0: no budget, only early stopping."""
    warm_start: bool = True
    """A retrain continues from the family's latest model when its architecture, input and classes
    match (new images or labels); otherwise it starts from scratch."""
    dropout: float = 0.3
    class_weight_balanced: bool = True
    seed: int = 0
    search_learning_rate: list[float] = []
    search_dropout: list[float] = []
    search_batch_size: list[int] = []
    shuffle_labels: bool = False
    """Sanity check only: train on permuted labels (the model must then lose to any real one)."""
    test_time_views: int = 1
    """1, 2, 4 or 8: average the probabilities over that many quarter turns and mirrors of each
    patch, in validation, evaluation and serving alike (recorded in the model card)."""
    input_size: int | None = 64
    """Largest model input side; larger patches are shrunk to it (area averaging) for training and by
    the scorer at evaluation and serving, e.g. 64 px from 300 px cells; None: the patch size."""


class ScratchCNNConfig(KerasTrainConfig):
    architecture: Literal["small_vgg", "lenet"] = "small_vgg"
    """'small_vgg' (default: 4 stages of two 3x3 conv + BatchNorm) or 'lenet' (as in DIGITS)."""
    filters: list[int] = [16, 32, 64, 128]


class VGG16Config(KerasTrainConfig):
    cut_block: int = 3
    """Keep VGG16 blocks 1..cut_block (activations "somewhere earlier in the network")."""
    weights: str = "offline"
    learning_rate: float = 1e-3
    """Head phase."""
    epochs: int = 4
    fine_tune_learning_rate: float = 1e-4
    fine_tune_epochs: int = 4
    images_per_epoch: int = 4096
    patience: int = 4


class EnsembleConfig(FamilySettings):
    metric: str = "roc_auc"
    """Validation metric that picks the members' weights."""
    weight_steps: int = 4
    """Weights tried on a simplex grid in steps of 1/weight_steps (equal weights always tried first)."""
    tie_tolerance: float = 0.002
    """Weightings within this much of the best validation ``metric`` count as tied; among them the
    lowest validation log loss wins (a member that only adds a near-constant score loses the tie).
    Members left with weight 0 are not part of the ensemble (nor run when it is served)."""


class AnomalyConfig(FamilySettings):
    """Anomaly detection trained on good images only (``ml/patchcore.py``): PatchCore's patch features
    scored by a Gaussian per location (PaDiM) or PatchCore's nearest neighbour."""

    normal_only: bool = True
    """Train on the images labeled good of the train split (defects left out); False: on every
    training image, as when batches carry no defect labels (all assumed normal)."""
    backbone: Literal["lite0", "lite2"] = "lite0"
    stages: list[str] = ["3", "5"]
    """Backbone stages whose maps, 3x3 averaged, are the patch features: Lite0's stage 3 (stride 8,
    40 channels) and 5 (stride 16, 112)."""
    grid_stage: str | None = None
    """The stage whose grid the features are brought onto: '5' (stride 16, 19x19 on a 300 px image;
    stage 3 averaged over 2x2 blocks) or '3' (stride 8, the deeper stage upsampled); None: the
    scoring's own, '5' for 'location', '3' for 'nearest' (finer maps of defects anywhere)."""
    scoring: Literal["location", "nearest"] = "location"
    """'location': a Gaussian per kind of image and grid location (aligned images of one size, such
    as ELPV's cells; chosen on ELPV's validation split, bench/results/anomaly_experiments.txt);
    'nearest': the nearest neighbour in a coreset memory bank (defects anywhere on photos of any
    size)."""
    kinds: int = 2
    """'location': kinds of good image found by k-means on their mean feature (no label read), each
    with its own Gaussians and score normalization (fewer when there are under 50 images per kind)."""
    shrinkage: float = 0.1
    """'location': weight of the covariances' shrinkage toward their mean diagonal."""
    coreset_size: int = 4000
    """'nearest': largest memory bank (patches kept by greedy k-center coreset subsampling)."""
    coreset_ratio: float = 0.1
    """'nearest': bank size as a share of the candidate patches, capped by coreset_size."""
    patch_stride: int = 2
    """'nearest': every patch_stride-th grid location (each way) of a training image is a bank candidate."""
    pool_size: int = 150_000
    """'nearest': candidates the coreset search sees at most (a random subset beyond): bounds its cost."""
    dims: int | None = None
    """Random projection of the patch features to this many dimensions; None: the scoring's own (64
    for 'location': 12 MB of Gaussians for two kinds on a 19x19 grid instead of 67 MB at all 152,
    validation AUC within noise; every dimension for 'nearest'); 0: every dimension."""
    input_size: int | None = None
    """Shrink patches to this side first (area averaging; None: the patch size)."""
    calibration_fraction: float = 0.2
    """Good training images kept out of the model; their scores normalize and calibrate the probability."""
    threshold_quantile: float = 0.99
    """When the validation split holds no defect: the threshold is this quantile of the good
    validation images' probabilities (with defects it is chosen as for every family)."""
    seed: int = 0
    shuffle_labels: bool = False
    """Sanity check only: pick the normal images by permuted labels (the model must then lose to any real one)."""
