"""SYNTHETIC: a tiny dent/scratch detector trained in seconds on generated surface patches and
registered in a model registry, so the service's tests, its benchmark and a quick look at the
endpoint need neither ELPV nor a trained champion. Its patches are cut by the same functions
the pipeline uses (point labels -> centered patch, random negative windows), and it is trained
and registered by the same training code, so its card has every field a real one has
(classes, input, validation metrics, golden predictions, data version).

Do not read its accuracy as anything but a smoke signal: the scenes are generated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from defect_assets.ml.images import encode_png, sha256_bytes
from defect_assets.ml.labels import is_defect_label
from defect_assets.ml.patches import PatchSpec, context_size, cut_image_patches
from defect_assets.ml.records import ModelCard
from defect_assets.ml.synthetic import make_surface_scene
from defect_assets.pipeline.ingest import image_key
from defect_assets.pipeline.patching import PATCH_COLUMNS
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

TINY_FAMILY = "tiny_cnn"
# Scene i goes to split SPLITS[i % len(SPLITS)]: whole scenes, so no scene leaks across splits.
SPLITS = ("train", "train", "train", "train", "train", "validation", "test")


def synthetic_patch_set(n_scenes: int = 28, size: int = 32, seed: int = 0, width: int = 192, height: int = 160,
                        defects: tuple[int, int] = (1, 2), negatives_per_positive: float = 1.5,
                        store: ObjectStore | None = None) -> ArrayTable:
    """Patches of generated scenes as a labeled_patches value (table + contexts), split by scene.
    With a store, each scene is also stored as ingestion stores images (content-addressed PNG),
    so the golden-set lookup finds every patch's source photo."""
    spec = PatchSpec(size=size, negatives_per_positive=negatives_per_positive)
    rows, contexts = [], []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_scenes)):
        rng = np.random.default_rng(child)
        img, found = make_surface_scene(rng, width, height, defects=int(rng.integers(defects[0], defects[1] + 1)),
                                        min_separation=size + 8)
        png = encode_png(img)
        image_id = sha256_bytes(png)
        if store is not None:
            store.write_bytes(image_key(image_id, "PNG"), png)
        labels = [dict(kind="point", label=d.kind, x=d.x, y=d.y) for d in found]
        for k, cut in enumerate(cut_image_patches(img, labels, spec, rng)):
            rows.append(dict(patch_id=f"{image_id[:16]}-{k:03d}", image_id=image_id, image=f"scene-{seed}-{i:04d}.png",
                             kind=cut.kind, label=cut.label, is_defect=is_defect_label(cut.label),
                             x=cut.x, y=cut.y, split=SPLITS[i % len(SPLITS)]))
            contexts.append(cut.context)
    table = pd.DataFrame(rows, columns=PATCH_COLUMNS)
    table["is_defect"] = table["is_defect"].astype(bool)
    return ArrayTable(table, {"context": np.stack(contexts)},
                      {"size": size, "context_size": context_size(size), "color": "L",
                       "label_version": f"synthetic-{seed}"})


def register_tiny_model(registry: ModelRegistry, patch_sets: dict[str, ArrayTable] | None = None, size: int = 32,
                        epochs: int = 4, filters: tuple[int, ...] = (8, 16), seed: int = 0, train: bool = True,
                        shuffle_labels: bool = False, log: Callable[[str], None] = lambda _: None) -> ModelCard:
    """Train (or, with train=False, only initialize) a tiny CNN on the patch sets and register it
    like any family: returns its card. Different seeds give different models. ``shuffle_labels``
    permutes the training labels (seeded): a model that can only have learned noise."""
    from defect_assets.ml.cnn import make_scratch_cnn
    from defect_assets.ml.training import FitResult, FitSettings, fit, seed_everything
    from defect_assets.pipeline.patching import build_augmented_set
    from defect_assets.pipeline.training import (
        BINARY_CLASSES,
        augmented_data,
        data_version,
        split_data,
        train_keras_family,
    )

    patch_sets = patch_sets or {"synthetic": synthetic_patch_set(size=size, seed=seed)}
    size = int(next(iter(patch_sets.values())).attrs["size"])
    classes = list(BINARY_CLASSES)
    augmented = {b: build_augmented_set(ps) for b, ps in patch_sets.items()}
    train_data = augmented_data(augmented, "binary", classes)
    if shuffle_labels:
        train_data.y = np.random.default_rng(seed).permutation(train_data.y)
    val = split_data(patch_sets, "validation", "binary", classes)
    settings = FitSettings(epochs=epochs, batch_size=64, learning_rate=3e-3, patience=epochs, seed=seed)
    seed_everything(seed)

    def phase(model) -> FitResult:
        if train:
            return fit(model, train_data.x, train_data.y, val.x, val.y, settings, len(classes))
        return FitResult(pd.DataFrame({"epoch": [0]}), 0.0, 0, 0)

    card, _ = train_keras_family(
        TINY_FAMILY, lambda: make_scratch_cnn((size, size, 1), len(classes), "small_vgg", filters=filters, dropout=0.1),
        [("train", phase)], train_data, val, classes, "binary",
        {"filters": list(filters), "epochs": epochs if train else 0, "seed": seed, "synthetic": True,
         "shuffle_labels": shuffle_labels},
        data_version(patch_sets), registry, log)
    return card
