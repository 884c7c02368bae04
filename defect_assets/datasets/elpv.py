"""The ELPV solar-cell electroluminescence data set (2,624 300x300 grayscale cells, defect
probability 0, 1/3, 2/3 or 1), read from the installed ``elpv-dataset`` package. It is never
copied into git (CC BY-NC-SA); seeding writes it into the (git-ignored) landing zone as batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from defect_assets.storage.base import ObjectStore
from defect_assets.storage.batches import list_batches, upload_files

ELPV_CITATION = ("Buerhop-Lutz et al. 2018; Deitsch et al. 2019, 'Automatic classification of defective "
                 "photovoltaic module cells in electroluminescence images' (ELPV, CC BY-NC-SA 4.0)")


def elpv_root() -> Path:
    try:
        import elpv_dataset
    except ImportError as e:
        raise RuntimeError("the ELPV data set is not installed: pip install elpv-dataset") from e
    return Path(elpv_dataset.__file__).parent / "data"


def elpv_labels() -> pd.DataFrame:
    """path (relative to the data folder), probability, cell type (mono/poly)."""
    df = pd.read_csv(elpv_root() / "labels.csv", sep=r"\s+", header=None, names=["path", "probability", "type"])
    if len(df) == 0:
        raise RuntimeError(f"no labels in {elpv_root() / 'labels.csv'}")
    return df


def level_label(p: float) -> str:
    """0, 1/3, 2/3, 1 as stable strings ('0.0000', '0.3333', '0.6667', '1.0000')."""
    return f"{p:.4f}"


def seed_elpv(landing: ObjectStore, n_batches: int = 4, limit: int | None = None, prefix: str = "elpv",
              seed: int = 0, progress=None) -> list[str]:
    """Write ELPV into the landing zone as ``n_batches`` batches (a seeded shuffle, so each batch
    mixes cell types and labels, like arrivals from a production line). Batches already present
    are left alone. Returns the batch ids."""
    df = elpv_labels()
    order = np.random.default_rng(seed).permutation(len(df))
    if limit:
        order = order[:limit]
    chunks = np.array_split(order, n_batches)
    existing = list_batches(landing)
    root = elpv_root()
    ids = []
    for b, idx in enumerate(chunks, start=1):
        batch_id = f"{prefix}-{b:02d}"
        ids.append(batch_id)
        if batch_id in existing:
            continue
        part = df.iloc[np.sort(idx)]
        names = [Path(p).name for p in part["path"]]
        labels = pd.DataFrame({"image": names, "label": [level_label(p) for p in part["probability"]],
                               "cell_type": part["type"].to_numpy()})

        def files(part=part, names=names, labels=labels):
            for rel, name in zip(part["path"], names):
                yield name, (root / rel).read_bytes()
            yield "labels.csv", labels.to_csv(index=False).encode()

        upload_files(landing, batch_id, files(), source=f"elpv-dataset ({ELPV_CITATION})")
        if progress:
            progress(batch_id, len(part))
    return ids
