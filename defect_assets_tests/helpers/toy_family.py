"""A toy model family registered through ``register_family`` AT IMPORT (as a plug-in would be):
``mean_intensity`` scores a patch by a logistic curve on its mean gray value, fitted on the
training split. Its own settings model, its own kind of artifact (a JSON file) and the scorer
that loads it. Import this module only in a subprocess: it adds the family to the process's
registry for good."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from defect_assets.ml.metrics import summary_metrics
from defect_assets.ml.scorer import Scorer
from defect_assets.pipeline.families import TrainedModel
from defect_assets.pipeline.family_registry import register_family
from defect_assets.pipeline.training import (
    all_labels,
    data_version,
    golden_record,
    input_spec,
    split_data,
    task_classes,
)
from defect_assets.storage.registry import ModelRegistry

TOY_KIND = "mean_intensity"
TOY_FILE = "mean_intensity.json"


class MeanIntensityConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    sharpness: float = 4.0
    """Slope of the logistic curve per standard deviation of mean intensity."""
    direction: str = "auto"
    """'auto' (darker or brighter, whichever the training split says is defective), 'darker' or 'brighter'."""


def _means(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1).mean(axis=1)


def _proba(params: dict, x: np.ndarray) -> np.ndarray:
    z = params["sign"] * params["sharpness"] * (_means(x) - params["center"]) / params["scale"]
    p = 1.0 / (1.0 + np.exp(-z))
    return np.stack([1 - p, p], axis=1).astype(np.float32)


def train_mean_intensity(config: MeanIntensityConfig, inputs: dict, registry: ModelRegistry, log) -> TrainedModel:
    """A toy classifier: a logistic curve on each patch's mean intensity (test of the family registry)."""
    assert isinstance(config, MeanIntensityConfig), type(config)  # typed settings, not a dict
    patches = inputs["labeled_patches"]
    classes = task_classes(all_labels(patches), "binary")
    train, val = (split_data(patches, s, "binary", classes) for s in ("train", "validation"))
    t0 = time.perf_counter()
    m = _means(train.x)
    center, scale = float(m.mean()), float(m.std() or 1.0)
    darker = m[train.y == 1].mean() < m[train.y == 0].mean() if config.direction == "auto" \
        else config.direction == "darker"
    params = {"center": center, "scale": scale, "sharpness": config.sharpness, "sign": -1.0 if darker else 1.0}
    proba = _proba(params, val.x)
    metrics = summary_metrics(val.y, proba)
    log(f"mean_intensity: validation AUC {metrics['roc_auc']:.3f}")
    card = registry.register("toy", {TOY_FILE: json.dumps(params).encode()}, {
        "kind": TOY_KIND, "task": "binary", "classes": classes, "config": config.model_dump(),
        "data_version": data_version(patches), "input": input_spec(train.x), "validation": metrics,
        "training_seconds": time.perf_counter() - t0, "golden": golden_record(val, proba)})
    return TrainedModel(card, pd.DataFrame([{**config.model_dump(), **{f"val_{k}": v for k, v in metrics.items()}}]))


def load_mean_intensity(card, read_file, compiled: bool, load_version) -> Scorer:
    params = json.loads(read_file(TOY_FILE))
    return Scorer(card, lambda x: _proba(params, x))


TOY = register_family("toy", MeanIntensityConfig, train_mean_intensity, ("labeled_patches",), TOY_KIND,
                      kinds=("python",), scorer=load_mean_intensity)
