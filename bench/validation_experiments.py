"""Experiments behind the ELPV defaults, on the VALIDATION split only (the test split is never
read here): what the main job's choices are worth against their alternatives.

    .venv/bin/python bench/validation_experiments.py [--data-dir data] [--views-limit 200]

It reads what the main job left in ``--data-dir``:
- elastic net on the cached VGG16 features: C, soft targets from ELPV's label probability (0,
  1/3, 2/3, 1) against the thresholded class, balanced class weights or not;
- the cell size (``--image-sizes``): the original 300 px cells of the same train and validation
  splits re-read and resized to each size, the same VGG16 features (blocks 3+4), the same elastic
  net with C chosen on validation;
- test-time views (1, 2, 4, 8 quarter turns and mirrors) for every registered Keras model, through
  the one scorer (``ml/scorer.py``), on the validation cells (``--views-limit`` of them, stratified
  by a fixed seed; 0 = all).
Each row: validation ROC AUC, accuracy and balanced accuracy at 0.5, and the fit time.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def stored(store, asset: str) -> dict:
    from defect_assets.storage.formats import read_value

    batches = sorted(store.walk_prefixes(f"{asset}/"))
    return {b: read_value(store, f"{asset}/{b}") for b in batches if store.exists(f"{asset}/{b}/current.json")}


def split_of(sets: dict, split: str):
    """(arrays, table) of one split over every batch."""
    parts = [(s, (s.table["split"] == split).to_numpy()) for _, s in sorted(sets.items())]
    table = pd.concat([s.table[m] for s, m in parts], ignore_index=True)
    return parts, table


def row(name: str, y: np.ndarray, proba: np.ndarray, seconds: float) -> dict:
    from defect_assets.ml.metrics import summary_metrics

    m = summary_metrics(y, proba)
    return {"experiment": name, "val_roc_auc": m["roc_auc"], "val_accuracy": m["accuracy"],
            "val_balanced_acc": m["balanced_accuracy"], "seconds": round(seconds, 1)}


def cached_features(store) -> tuple[dict, dict]:
    """({split: features}, {split: table}) of train and validation from the main job's cache."""
    feats = stored(store, "backbone_features")
    xs, tables = {}, {}
    for split in ("train", "validation"):
        parts, tables[split] = split_of(feats, split)
        xs[split] = np.concatenate([np.asarray(s.arrays["features"])[m] for s, m in parts])
    return xs, tables


def size_experiments(store, sizes: list[int], c_grid: list[float]) -> pd.DataFrame:
    """Val AUC of the elastic net (C picked on validation) on features of cells resized to each size."""
    from defect_assets.datasets.elpv import elpv_root
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.metrics import summary_metrics
    from defect_assets.ml.preprocess import prepare_patch
    from defect_assets.pipeline.features import backbone_features

    patches = stored(store, "labeled_patches")
    tables = {split: split_of(patches, split)[1] for split in ("train", "validation")}
    root, rows = elpv_root(), []
    for size in sizes:
        t0 = time.perf_counter()
        xs = {split: backbone_features(np.stack([prepare_patch((root / "images" / name).read_bytes(), size, 1)
                                                 for name in table["image"]]), (3, 4), batch_size=32)
              for split, table in tables.items()}
        extract = time.perf_counter() - t0
        y = {s: tables[s]["is_defect"].to_numpy().astype(int) for s in tables}
        best = None
        for C in c_grid:
            model = fit_elastic_net(xs["train"], y["train"], ["ok", "defect"], C=C, l1_ratio=0.5)
            proba = model.predict_proba(xs["validation"])
            if best is None or summary_metrics(y["validation"], proba)["roc_auc"] > best[1]["roc_auc"]:
                best = (C, summary_metrics(y["validation"], proba), proba)
        rows.append(row(f"cells at {size} px (elastic net, C={best[0]} on validation)", y["validation"], best[2],
                        time.perf_counter() - t0))
        rows[-1]["extract_s"] = round(extract, 1)
        print("   ", rows[-1], flush=True)
    return pd.DataFrame(rows)


def elastic_net_experiments(store, c_grid: list[float]) -> pd.DataFrame:
    from defect_assets.ml.linear import fit_elastic_net, soft_binary_rows

    xs, tables = cached_features(store)
    y = {s: tables[s]["is_defect"].to_numpy().astype(int) for s in tables}
    p = pd.to_numeric(tables["train"]["label"], errors="coerce").to_numpy()
    p = np.where(np.isfinite(p), p, y["train"].astype(float))
    classes = ["ok", "defect"]
    print(f"elastic net: {len(y['train'])} train and {len(y['validation'])} validation cells, "
          f"{xs['train'].shape[1]} features", flush=True)
    rows = []
    for C in c_grid:
        for soft in (False, True):
            for weight in (("balanced", None) if not soft else ("balanced",)):
                fx, fy, w = (soft_binary_rows(xs["train"], p) if soft else (xs["train"], y["train"], None))
                t0 = time.perf_counter()
                model = fit_elastic_net(fx, fy, classes, C=C, l1_ratio=0.5, class_weight=weight, sample_weight=w)
                name = f"elastic net C={C} {'soft' if soft else 'hard'} targets, {weight or 'unweighted'}"
                rows.append(row(name, y["validation"], model.predict_proba(xs["validation"]),
                                time.perf_counter() - t0))
                print("   ", rows[-1], flush=True)
    return pd.DataFrame(rows)


def view_experiments(store, limit: int) -> pd.DataFrame:
    from defect_assets.ml.records import ModelCard
    from defect_assets.ml.scorer import load_registered
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(store)
    patches = stored(store, "labeled_patches")
    parts, table = split_of(patches, "validation")
    from defect_assets.pipeline.patching import patches_of

    x = np.concatenate([np.asarray(patches_of(s))[m] for s, m in parts])
    y = table["is_defect"].to_numpy().astype(int)
    if limit and limit < len(y):
        rng = np.random.default_rng(0)
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == k), round(limit * (y == k).mean()),
                                                  replace=False) for k in (0, 1)]))
        x, y = x[keep], y[keep]
    newest = {}
    for card in registry.versions():
        if card.kind != "features+linear" and card.family in ("scratch_cnn", "fine_tuned_vgg16"):
            newest[card.family] = card.version  # versions come oldest first
    print(f"test-time views: {len(y)} validation cells; models {newest}", flush=True)
    rows = []
    for family, version in newest.items():
        scorer = load_registered(registry, version)
        base = scorer.card.to_dict()
        for views in (1, 2, 4, 8):
            scorer.card = ModelCard.from_dict({**base, "inference": {**base.get("inference", {}), "views": views}})
            t0 = time.perf_counter()
            proba = scorer.predict_proba(x)
            rows.append(row(f"{family} {views} view(s)", y, proba, time.perf_counter() - t0))
            print("   ", rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--c-grid", type=float, nargs="+", default=[0.02, 0.05, 0.2, 0.5])
    ap.add_argument("--views-limit", type=int, default=0)
    ap.add_argument("--skip-views", action="store_true")
    ap.add_argument("--skip-elastic-net", action="store_true")
    ap.add_argument("--image-sizes", type=int, nargs="*", default=[],
                    help="cell sizes to compare (features recomputed from the original cells)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "validation_experiments.txt")
    args = ap.parse_args()

    from defect_assets.storage import LocalObjectStore

    store = LocalObjectStore(args.data_dir / "artifacts")
    tables = [] if args.skip_elastic_net else [elastic_net_experiments(store, args.c_grid)]
    if not args.skip_views:
        tables.append(view_experiments(store, args.views_limit))
    if args.image_sizes:
        tables.append(size_experiments(store, args.image_sizes, args.c_grid))
    text = pd.concat(tables, ignore_index=True).to_string(index=False, float_format=lambda v: f"{v:.3f}")
    print("\nValidation split only (the test split is not read):\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# {' '.join(sys.argv)}\n{text}\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
