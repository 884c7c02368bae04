"""A small Lite0 elastic net trained on generated patches and registered (seconds), with the patches
and their stored source photos, for the export tests."""

from __future__ import annotations

import numpy as np

from defect_assets.storage.base import ObjectStore
from defect_assets.storage.registry import ModelRegistry


def register_lite_elastic_net(store: ObjectStore, views: int = 2, seed: int = 0, n_scenes: int = 14):
    """(registry, patch_sets, card): the elastic net on Lite0 ONNX features of 32 px synthetic
    patches, its golden record the validation patches' probabilities as the scorer gives them."""
    from defect_assets.ml.backbone import LITE_STAGES, extract_features, make_extractor
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.scorer import dihedral_views
    from defect_assets.pipeline.patching import patches_of
    from defect_assets.pipeline.tiny import synthetic_patch_set
    from defect_assets.pipeline.training import BINARY_CLASSES, SplitData, golden_record

    patches = synthetic_patch_set(n_scenes=n_scenes, size=32, seed=seed, store=store)
    spec = {"backbone": "lite0", "stages": list(LITE_STAGES), "runtime": "onnxruntime"}
    fx = make_extractor(spec, (32, 32, 1))
    px = np.asarray(patches_of(patches))[..., None]
    table = patches.table
    y = table["is_defect"].to_numpy().astype(int)
    train = (table["split"] == "train").to_numpy()
    val = (table["split"] == "validation").to_numpy()
    feats = [extract_features(fx, v) for v in dihedral_views(px, views)]
    model = fit_elastic_net(np.concatenate([f[train] for f in feats]), np.tile(y[train], views),
                            list(BINARY_CLASSES), C=0.05, max_iter=300)
    proba = np.mean([model.predict_proba(f[val]) for f in feats], axis=0)
    registry = ModelRegistry(store)
    card = registry.register("elastic_net", {"linear.npz": model.to_bytes()}, {
        "kind": "features+linear", "task": "binary", "classes": list(BINARY_CLASSES),
        "features": spec, "inference": {"views": views}, "input": {"size": 32, "channels": 1},
        "data_version": {"id": "synthetic-0", "batches": ["synthetic"]},
        "golden": golden_record(SplitData(px[val][..., 0], y[val], table[val].reset_index(drop=True)), proba)})
    return registry, {"synthetic": patches}, card
