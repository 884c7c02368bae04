"""Batch scoring of a large stored set without the web service: every accepted image of an
ingested batch (its ``raw_images`` inventory) scored by a registered model through the one
inference seam, in shards: in this process, or on the Dask cluster that
``DEFECT_ASSETS_DASK_ADDRESS`` names (``pipeline/engine.py``), whose workers each load the model
once and read the images from the store themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline import engine
from defect_assets.pipeline.active_learning import score_pool, unlabeled_pool
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.env import StoreConfig
from defect_assets.storage.formats import read_value
from defect_assets.storage.layout import asset_value_prefix
from defect_assets.storage.registry import ModelRegistry


def score_batch(store: ObjectStore, batch: str, version: str | None = None, store_config: StoreConfig | None = None,
                address: str | None = None, progress: engine.Progress | None = None) -> pd.DataFrame:
    """One row per image of ``batch``: image, image_id, model_version and one probability column
    per class (``p_<class>``). ``version``: a registered model (default: the production one)."""
    registry = ModelRegistry(store)
    version = version or (registry.production() or {}).get("version")
    if not version:
        raise ValueError("no model version given and no production model in the registry (run deploy_job first)")
    inventory = read_value(store, asset_value_prefix(["raw_images"], batch)).table
    images = unlabeled_pool(batch, inventory, pd.DataFrame({"image": pd.Series([], dtype=str)}))
    scorer = load_registered(registry, version)
    proba = score_pool(scorer, images, store, progress, store_config, address)
    out = images[["image", "image_id"]].assign(model_version=scorer.version)
    for k, name in enumerate(scorer.classes):
        out[f"p_{name}"] = np.asarray(proba[:, k], np.float64)
    return out
