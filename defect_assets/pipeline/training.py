"""Training the three model families on the patch sets of every batch, without Dagster:
gather the data (train = augmented set, validation = untouched validation patches), train,
and register the model with its card (config, data version, metrics, timing)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defect_assets.ml.labels import class_order
from defect_assets.ml.metrics import summary_metrics
from defect_assets.ml.records import ModelCard
from defect_assets.pipeline.patching import patches_of
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

BINARY_CLASSES = ["ok", "defect"]
TASKS = ("binary", "multiclass")


def task_classes(labels, task: str) -> list[str]:
    if task == "binary":
        return list(BINARY_CLASSES)
    if task == "multiclass":
        return class_order(labels)
    raise ValueError(f"task must be one of {TASKS}, not {task!r}")


def task_targets(table: pd.DataFrame, task: str, classes: list[str]) -> np.ndarray:
    if task == "binary":
        return table["is_defect"].to_numpy().astype(np.int64)
    index = {c: i for i, c in enumerate(classes)}
    return table["label"].astype(str).map(index).to_numpy().astype(np.int64)


def data_version(patch_sets: dict[str, ArrayTable]) -> dict:
    """Which batches and which label versions a model saw: the lineage every model records."""
    label_versions = {b: patch_sets[b].attrs.get("label_version", "?") for b in sorted(patch_sets)}
    doc = {"batches": sorted(patch_sets), "label_versions": label_versions}
    doc["id"] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
    return doc


@dataclass
class SplitData:
    x: np.ndarray  # (N, s, s[, C]) uint8
    y: np.ndarray  # (N,) class index
    table: pd.DataFrame


def split_data(patch_sets: dict[str, ArrayTable], split: str, task: str, classes: list[str]) -> SplitData:
    xs, tables = [], []
    for b in sorted(patch_sets):
        ps = patch_sets[b]
        mask = (ps.table["split"] == split).to_numpy()
        xs.append(np.asarray(patches_of(ps))[mask])
        tables.append(ps.table[mask].assign(batch=b))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    x = np.concatenate(xs) if xs else np.zeros((0, 1, 1), np.uint8)
    return SplitData(x, task_targets(table, task, classes) if len(table) else np.zeros(0, np.int64), table)


def augmented_data(augmented: dict[str, ArrayTable], task: str, classes: list[str], angle_step: int = 15) -> SplitData:
    """The augmented training images of every batch, keeping the views whose rotation angle is a
    multiple of angle_step (random affine views are kept whenever present)."""
    if angle_step % 15 or not 15 <= angle_step <= 360:
        raise ValueError(f"angle_step must be a multiple of 15 between 15 and 360, not {angle_step}")
    xs, tables = [], []
    for b in sorted(augmented):
        t = augmented[b].table
        keep = ((t["angle"] % angle_step == 0) | (t["variant"] != "rotation")).to_numpy()
        xs.append(np.asarray(augmented[b].arrays["image"])[keep])
        tables.append(t[keep].assign(batch=b))
    table = pd.concat(tables, ignore_index=True)
    return SplitData(np.concatenate(xs), task_targets(table, task, classes), table)


def all_labels(patch_sets: dict[str, ArrayTable]) -> list[str]:
    return sorted({str(v) for ps in patch_sets.values() for v in ps.table["label"]})


def check_trainable(train: SplitData, val: SplitData, classes: list[str]) -> None:
    if len(train.y) == 0:
        raise ValueError("no training patches: materialize labeled_patches / augmented_training_set "
                         "for at least one batch")
    if len(val.y) == 0:
        raise ValueError("no validation patches: the validation split is empty "
                         "(more images, or a larger validation_fraction)")
    if len(np.unique(train.y)) < 2:
        raise ValueError(f"the training data has a single class ({classes[int(train.y[0])]}); a classifier needs two")


def input_spec(x: np.ndarray) -> dict:
    return {"size": int(x.shape[1]), "channels": int(x.shape[3]) if x.ndim == 4 else 1}


def train_keras_family(family: str, build: Callable, fit_phases: list[tuple[str, Callable]],
                       train: SplitData, val: SplitData, classes: list[str], task: str, config: dict, dversion: dict,
                       registry: ModelRegistry, log: Callable[[str], None],
                       patch_size: int | None = None, views: int = 1,
                       warm_start_from: str | None = None) -> tuple[ModelCard, pd.DataFrame]:
    """Build, run the fit phases (each a callable(model, phase_index) -> FitResult), score the
    validation split through a Scorer with the card's test-time ``views`` (as evaluation and
    serving will), register. Returns (card, per-epoch history)."""
    from defect_assets.ml.scorer import Scorer
    from defect_assets.ml.training import model_to_bytes, predict_proba

    check_trainable(train, val, classes)
    t0 = time.perf_counter()
    model = build()
    histories, images = [], 0
    for name, phase in fit_phases:
        res = phase(model)
        histories.append(res.history.assign(phase=name))
        images += res.images_seen
    seconds = time.perf_counter() - t0
    history = pd.concat(histories, ignore_index=True)
    card = {"kind": "keras", "task": task, "classes": classes, "config": config, "data_version": dversion,
            "input": {**input_spec(train.x), **({"patch_size": patch_size} if patch_size and
                                                  patch_size != train.x.shape[1] else {})},
            **({"inference": {"views": views}} if views != 1 else {}),
            **({"warm_start_from": warm_start_from} if warm_start_from else {})}
    draft = ModelCard.create({**card, "version": f"{family} (in memory)"})
    proba = Scorer(draft, lambda x: predict_proba(model, x)).predict_proba(val.x)
    metrics = summary_metrics(val.y, proba)
    log(f"{family}: validation " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + f" ({seconds:.0f}s)")
    card.update({
            "validation": metrics, "training_seconds": seconds,
            "golden": golden_record(val, proba),
            "training_images_seen": images, "images_per_second": images / seconds if seconds else 0.0,
            "params": int(model.count_params())})
    card = registry.register(family, {"model.keras": model_to_bytes(model)}, card)
    return card, history


GOLDEN_SIZE = 32


def golden_indices(val: SplitData, n: int = GOLDEN_SIZE) -> np.ndarray:
    """Indices (into ``val``) of the fixed golden set a card records: the first n validation patches by
    patch id. (``pipeline.golden.golden_set`` is the stored set a deployed model is checked on.)"""
    order = np.argsort(val.table["patch_id"].to_numpy().astype(str), kind="stable")
    return order[:n]


def golden_record(val: SplitData, proba: np.ndarray) -> dict:
    """What the in-memory model predicted on the golden set, kept in the card so the stored
    artifact can be checked against it later, loaded exactly as the service loads it."""
    idx = golden_indices(val)
    return {"patch_ids": [str(v) for v in val.table["patch_id"].to_numpy()[idx]],
            "proba": np.asarray(proba)[idx].round(7).tolist()}


def epoch_logger(family: str, total: int, log: Callable[[str], None], offset: int = 0) -> Callable[[int, dict], None]:
    """One log line per epoch; a ``log`` that also has an ``epoch_metrics(family, epoch, row)``
    method (the Pipes reporter of ``defect_assets.pipes_training``) gets each row as numbers too."""
    metrics = getattr(log, "epoch_metrics", None)

    def on_epoch(epoch: int, row: dict) -> None:
        if metrics is not None:
            metrics(family, epoch + offset, row)
        log(f"{family} epoch {epoch + offset}/{total}: loss {row.get('loss', float('nan')):.3f} "
            f"acc {row.get('accuracy', float('nan')):.3f} auc {row.get('auc', float('nan')):.3f} | "
            f"val loss {row.get('val_loss', float('nan')):.3f} acc {row.get('val_accuracy', float('nan')):.3f} "
            f"auc {row.get('val_auc', float('nan')):.3f} | lr {row['lr']:.2g} ({row['seconds']:.1f}s)")
    return on_epoch


def card_summary(card: ModelCard) -> pd.DataFrame:
    """One row a person (and downstream assets) can read: version, family, data, metrics."""
    row = {"version": card.version, "family": card.family, "created": card.created,
           "task": card.task, "classes": json.dumps(card.classes), "data_version": card.data_version.id,
           "batches": ",".join(card.data_version.batches), "training_seconds": card.training_seconds}
    row.update({f"val_{k}": v for k, v in card.validation.to_dict().items()})
    return pd.DataFrame([row])
