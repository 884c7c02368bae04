"""An ingested batch of synthetic photos and an annotation project over it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defect_assets.ml.images import encode_png
from defect_assets.ml.synthetic import make_surface_scene
from defect_assets.pipeline.ingest import ingest_batch
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_files
from defect_assets.storage.formats import ArrayTable, write_value
from defect_assets.storage.layout import asset_value_prefix
from defect_assets_tests.helpers.serving import model_registry

BATCH = "dents-1"

SIZE = (240, 180)


def ingested_batch(store, dest, batch: str = BATCH, n: int = 3, seed: int = 7) -> pd.DataFrame:
    """SYNTHETIC surface photos uploaded to a landing zone and ingested; the inventory stored
    where raw_images keeps it (what the annotation view reads)."""
    landing = LocalObjectStore(dest / "landing")
    files = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        img, _ = make_surface_scene(np.random.default_rng(child), *SIZE, defects=2, min_separation=50)
        files.append((f"line/photo-{i}.png", encode_png(img)))
    upload_files(landing, batch, files)
    inventory = ingest_batch(landing, store, batch)
    write_value(store, asset_value_prefix("raw_images", batch), ArrayTable(inventory, attrs={"batch": batch}))
    return inventory


def annotation_project(dest):
    store, registry, versions = model_registry(dest)
    registry.promote(versions["a"], threshold=0.5)
    inventory = ingested_batch(store, dest)
    return store, versions, inventory


PHOTO = "line/photo-0.png"
