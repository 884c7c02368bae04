"""The backbone and feature recipe on ELPV, chosen on the VALIDATION split only (the test split is
never read here): frozen EfficientNet-Lite0 stage features at 224 and 300 px, and how the 8 quarter
turns and mirrors enter (not at all, averaged features, extra training rows, averaged
probabilities), each with the elastic net the main job trains.

    .venv/bin/python bench/backbone_experiments.py [--sizes 300 224] [--cache /tmp/lite_feats]

Features are cached per size as .npy in --cache so a second run only refits. Splits: the main
job's (a stable hash of each image's sha256: ml/splits.py).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd


def load_cells(size: int):
    from PIL import Image

    from defect_assets.datasets.elpv import elpv_labels, elpv_root
    from defect_assets.ml.splits import assign_split

    labels = elpv_labels()
    root = elpv_root()
    xs, splits = [], []
    for p in labels["path"]:
        data = (root / p).read_bytes()
        splits.append(assign_split(hashlib.sha256(data).hexdigest()))
        im = Image.open(root / p).convert("L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BOX)
        xs.append(np.asarray(im, np.uint8))
    return np.stack(xs), labels, np.asarray(splits)


def features(x: np.ndarray, size: int, cache: Path, backbone: str = "lite0") -> np.ndarray:
    """(8, N, D): the features of every view (identity first)."""
    from defect_assets.ml.backbone import extract_features, make_extractor
    from defect_assets.ml.scorer import dihedral_views

    path = cache / f"{backbone}_{size}_8views.npy"
    if path.exists():
        return np.load(path)
    fx = make_extractor({"backbone": backbone, "stages": ["4", "5", "6", "top"], "runtime": "onnxruntime"},
                        (size, size, 1))
    t0 = time.perf_counter()
    out = []
    for i, v in enumerate(dihedral_views(x, 8)):
        out.append(extract_features(fx, v[..., None], batch_size=32))
        print(f"  {backbone} {size} px view {i + 1}/8: {time.perf_counter() - t0:.0f}s", flush=True)
    f = np.stack(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, f)
    return f


def fit_eval(xtr, ytr, xva_views, yva, C):
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.metrics import summary_metrics

    t0 = time.perf_counter()
    m = fit_elastic_net(xtr, ytr, ["ok", "defect"], C=C, l1_ratio=0.5)
    fit_s = time.perf_counter() - t0
    p = np.mean([m.predict_proba(v) for v in xva_views], axis=0)
    return {**summary_metrics(yva, p), "fit_s": round(fit_s, 1)}


def fit_eval_mlp(f: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, rows_views: int, test_views: int,
                 hidden: int = 256, seed: int = 0) -> dict:
    """A trained non-linear head on the same frozen multi-stage features (the cheap 'learned Lite0'
    candidate): standardized features, Dense(hidden, relu) + dropout + softmax, balanced class
    weights, Adam; early stopping on 15% of the TRAIN cells held out (the validation split only
    reports, as for the elastic net)."""
    import keras

    from defect_assets.ml.metrics import summary_metrics

    keras.utils.set_random_seed(seed)
    idx = np.flatnonzero(tr)
    rng = np.random.default_rng(seed)
    inner_val = np.zeros(len(y), bool)
    inner_val[rng.choice(idx, size=len(idx) * 15 // 100, replace=False)] = True
    inner_tr = tr & ~inner_val
    xtr = f[:rows_views, inner_tr].reshape(-1, f.shape[-1])
    ytr = np.tile(y[inner_tr], rows_views)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    norm = lambda a: ((a - mu) / sd).astype(np.float32)  # noqa: E731
    model = keras.Sequential([keras.Input((f.shape[-1],)), keras.layers.Dropout(0.2),
                              keras.layers.Dense(hidden, activation="relu"), keras.layers.Dropout(0.5),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(3e-4), "sparse_categorical_crossentropy", metrics=[])
    pos = ytr.mean()
    t0 = time.perf_counter()
    stop = keras.callbacks.EarlyStopping("val_loss", patience=6, restore_best_weights=True)
    hist = model.fit(norm(xtr), ytr, validation_data=(norm(f[0, inner_val]), y[inner_val]), epochs=80,
                     batch_size=128, class_weight={0: 0.5 / (1 - pos), 1: 0.5 / pos}, callbacks=[stop], verbose=0)
    fit_s = time.perf_counter() - t0
    p = np.mean([model.predict(norm(v), verbose=0) for v in f[:test_views, va]], axis=0)
    return {**summary_metrics(y[va], p), "fit_s": round(fit_s, 1), "epochs": len(hist.history["loss"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 224])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lite_feats"))
    ap.add_argument("--c-grid", type=float, nargs="+", default=[0.02, 0.05, 0.2])
    ap.add_argument("--mlp", action="store_true", help="also a trained MLP head on the same features")
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        x, labels, split = load_cells(size)
        y = (labels["probability"].to_numpy() >= 0.5).astype(np.int64)
        f = features(x, size, args.cache)
        tr, va = split == "train", split == "validation"
        print(f"{size} px: {tr.sum()} train, {va.sum()} validation cells, {f.shape[-1]} features", flush=True)
        recipes = {
            "1 view": (f[0][tr], y[tr], [f[0][va]]),
            "8 views as training rows, 1 test view": (f[:, tr].reshape(-1, f.shape[-1]), np.tile(y[tr], 8),
                                                      [f[0][va]]),
            "8 views as training rows, 8 test views (mean proba)": (f[:, tr].reshape(-1, f.shape[-1]),
                                                                    np.tile(y[tr], 8), list(f[:, va])),
            "features averaged over 8 views (train and test)": (f[:, tr].mean(0), y[tr], [f[:, va].mean(0)]),
        }
        for name, (xtr, ytr, xva) in recipes.items():
            for C in args.c_grid:
                r = fit_eval(xtr, ytr, xva, y[va], C)
                rows.append({"size": size, "recipe": name, "C": C, **r})
                print(f"  {name:55s} C={C:<5} val AUC {r['roc_auc']:.3f} acc {r['accuracy']:.3f} "
                      f"(fit {r['fit_s']}s)", flush=True)
        if args.mlp:
            for rows_views, test_views, name in ((1, 1, "MLP head, 1 view"),
                                                 (8, 1, "MLP head, 8 views as rows, 1 test view"),
                                                 (8, 8, "MLP head, 8 views as rows, 8 test views")):
                r = fit_eval_mlp(f, y, tr, va, rows_views, test_views)
                rows.append({"size": size, "recipe": name, "C": np.nan, **r})
                print(f"  {name:55s}         val AUC {r['roc_auc']:.3f} acc {r['accuracy']:.3f} "
                      f"(fit {r['fit_s']}s, {r['epochs']} epochs)", flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
