"""The anomaly-detection family (``ml/patchcore.py``: PatchCore's patch features scored per location
as PaDiM, or by PatchCore's nearest neighbour): trained on the good images of the train split only
(``normal_only``), scored like every family through ``ml/scorer.py`` (its own card kind,
``anomaly``), so evaluation, the champion, serving and export treat it alike."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from defect_assets.ml.patchcore import KIND, MODEL_FILE, AnomalyScorer, fit_anomaly
from defect_assets.ml.records import ModelCard
from defect_assets.pipeline.families import TrainedModel
from defect_assets.pipeline.family_settings import AnomalyConfig
from defect_assets.pipeline.training import (
    all_labels,
    data_version,
    golden_record,
    input_spec,
    split_data,
    task_classes,
)
from defect_assets.storage.registry import ModelRegistry

FAMILY = "anomaly"


def train_anomaly(config: AnomalyConfig, inputs: dict, registry: ModelRegistry, log) -> TrainedModel:
    """The anomaly model of the good training patches of every batch; registers its arrays (npz) and card."""
    from defect_assets.ml.metrics import summary_metrics

    patches = inputs["labeled_patches"]
    classes = task_classes(all_labels(patches), "binary")
    train = split_data(patches, "train", "binary", classes)
    val = split_data(patches, "validation", "binary", classes)
    if len(val.y) == 0:
        raise ValueError("no validation patches: the validation split is empty")
    y = train.y
    if config.shuffle_labels:  # the bank then holds a random share of the defects too
        log("anomaly: choosing the normal images by PERMUTED labels (shuffle_labels=True, a sanity check)")
        y = np.random.default_rng(config.seed).permutation(y)
    good = train.x[y == 0] if config.normal_only else train.x
    log(f"anomaly: {len(good)} of {len(train.y)} training patches used as normal "
        f"({'good ones only' if config.normal_only else 'all, labels ignored'}); validation {len(val.y)} "
        f"({int(val.y.sum())} defects)")
    patch_size = int(train.x.shape[1])
    size = patch_size
    if config.input_size and config.input_size < patch_size:
        from defect_assets.ml.preprocess import shrink_patches

        size = int(config.input_size)
        good = shrink_patches(good, size)
    t0 = time.perf_counter()
    model = fit_anomaly(good, config.backbone, tuple(config.stages), config.scoring, config.grid_stage, config.kinds,
                        config.shrinkage, config.coreset_size, config.coreset_ratio, config.patch_stride,
                        config.pool_size, config.dims, config.calibration_fraction, config.seed, log)
    seconds = time.perf_counter() - t0
    spec = input_spec(good)
    card = {"kind": KIND, "task": "binary", "classes": classes, "config": config.model_dump(),
            "data_version": data_version(patches),
            "input": {"size": size, "channels": spec["channels"],
                      **({"patch_size": patch_size} if patch_size != size else {})},
            "anomaly": model.meta()}
    scorer = AnomalyScorer(ModelCard.create({**card, "version": "anomaly (in memory)"}), model)
    proba = scorer.predict_proba(val.x)
    metrics = summary_metrics(val.y, proba)
    card.update({"validation": metrics, "training_seconds": seconds, "golden": golden_record(val, proba)})
    card = registry.register(FAMILY, {MODEL_FILE: model.to_bytes()}, card)
    auc = metrics.get("roc_auc", float("nan"))
    size = (f"{model.kinds} kind(s) of Gaussians" if model.scoring == "location" else f"bank {len(model.bank)} patches")
    log(f"anomaly_model {card.version}: {model.scoring} scoring, {size}, {seconds:.1f}s; validation AUC "
        f"{auc:.3f}" + ("" if np.isfinite(auc) else " (no defect in validation)"))
    trials = pd.DataFrame([{**{k: v for k, v in config.model_dump().items() if not isinstance(v, list)},
                            **{f"val_{k}": v for k, v in metrics.items()}, "seconds": seconds}])
    return TrainedModel(card, trials, notes={"scoring": model.scoring, "kinds": model.kinds,
                                             "bank_size": int(len(model.bank)) if model.bank is not None else 0})
