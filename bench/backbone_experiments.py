"""The backbone and feature recipe on ELPV, chosen on the VALIDATION split only: frozen
EfficientNet-Lite0 stage features at 224 and 300 px, and how the 8 quarter turns and mirrors enter
(not at all, averaged features, extra training rows, averaged probabilities), each with the elastic
net the main job trains.

    .venv/bin/python bench/backbone_experiments.py [--sizes 300 224] [--cache /tmp/lite_feats]

``--backbones lite0:300 lite2:260 lite2:300`` instead compares backbones side by side in one run
(one view, the production recipe): features of every cell computed in alternating batches so
load hits each alike, the elastic net for each stage set and C, and the one-image latency of each
backbone's best validation recipe (a full-size 300 px cell shrunk to the input, ONNX features,
linear head), its calls interleaved with the others'. ``--test-once backbone:size:stages:C``
reports the test split of ONE recipe already chosen on validation (the only path that reads
test labels).

Features are cached as .npy in --cache so a second run only refits. Splits: the main job's (a
stable hash of each image's sha256: ml/splits.py).
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


def parse_recipe(text: str) -> tuple[str, int]:
    backbone, size = text.split(":")
    return backbone, int(size)


def stage_widths(backbone: str, stages) -> dict[str, int]:
    from defect_assets.ml.efficientnet_lite import converted

    blocks, weights = converted(backbone)
    width = {str(b.stage): b.filters_out for b in blocks} | {"top": int(weights["top_conv"][0].shape[-1])}
    return {s: width[s] for s in stages}


def stage_columns(backbone: str, all_stages: tuple[str, ...], subset: tuple[str, ...]) -> np.ndarray:
    """Columns of ``subset``'s features inside the features of ``all_stages`` (each stage: its mean-
    then its max-pooled channels, in ``all_stages`` order), in the order a graph of ``subset`` has."""
    widths = stage_widths(backbone, all_stages)
    start, lo = {}, 0
    for s in all_stages:
        start[s], lo = lo, lo + 2 * widths[s]
    return np.concatenate([np.arange(start[s], start[s] + 2 * widths[s]) for s in subset])


def side_by_side_features(x300: np.ndarray, recipes: list[tuple[str, int]], stages: tuple[str, ...],
                          batch: int = 32) -> tuple[dict, dict]:
    """{recipe: (N, D) features} and {recipe: seconds for all N cells}, the recipes' batches
    interleaved (the order rotated every batch) so a change of load hits all of them."""
    from defect_assets.ml.lite_onnx import OnnxExtractor
    from defect_assets.ml.preprocess import shrink_patches

    inputs, shrink_s = {}, {}
    for r in recipes:
        t0 = time.perf_counter()
        inputs[r] = shrink_patches(x300, r[1])[..., None]
        shrink_s[r] = time.perf_counter() - t0
    ex = {r: OnnxExtractor(r[0], 1, stages) for r in recipes}
    for r in recipes:
        ex[r](inputs[r][:batch])  # warm
    out = {r: [] for r in recipes}
    seconds = dict.fromkeys(recipes, 0.0)
    t_all = time.perf_counter()
    for j, lo in enumerate(range(0, len(x300), batch)):
        for k in range(len(recipes)):
            r = recipes[(j + k) % len(recipes)]
            t0 = time.perf_counter()
            out[r].append(ex[r](inputs[r][lo:lo + batch]))
            seconds[r] += time.perf_counter() - t0
        if j % 20 == 19:
            print(f"  features: {lo + batch}/{len(x300)} cells, {time.perf_counter() - t_all:.0f}s", flush=True)
    return {r: np.concatenate(v) for r, v in out.items()}, {r: (seconds[r], shrink_s[r]) for r in recipes}


def interleaved_latency(cells: np.ndarray, heads: dict, calls: int = 200, warm: int = 10,
                        spin: bool = False) -> dict:
    """{key: (p50 ms, p99 ms)} of one full-size cell through (shrink to the input size, ONNX
    features, linear head), ``calls`` per key, the keys' calls interleaved (order rotated).

    ``spin=False`` turns off ONNX Runtime's spin-waiting of idle intra-op threads: with it on (the
    default the service runs with), the threads of the session that just ran keep spinning while
    the next recipe's session runs, so on 2 cores interleaved calls time each other's spinning
    (measured 2026-12-07: Lite0 alone p50 15 ms, interleaved with Lite2 30 ms; without spinning
    11 ms either way)."""
    from defect_assets.ml.lite_onnx import OnnxExtractor, build_graph, threads
    from defect_assets.ml.preprocess import shrink_patches

    runs = {}
    for key, (backbone, size, stages, model) in heads.items():
        ex = OnnxExtractor(backbone, 1, tuple(stages))
        if not spin:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads(), 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            ex.session = ort.InferenceSession(build_graph(backbone, 1, tuple(stages)), options,
                                              providers=["CPUExecutionProvider"])

        def run(cell, ex=ex, size=size, model=model):
            return model.predict_proba(ex(shrink_patches(cell[None], size)[..., None]))
        runs[key] = run
    keys = list(runs)
    times = {k: [] for k in keys}
    for i in range(warm + calls):
        for j in range(len(keys)):
            k = keys[(i + j) % len(keys)]
            cell = cells[i % len(cells)]
            t0 = time.perf_counter()
            runs[k](cell)
            if i >= warm:
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in times.items()}


def compare_backbones(args) -> None:
    """Backbones and input sizes side by side on the validation split, one view (see the module
    docstring)."""
    import os

    from defect_assets.ml.evaluation import paired_auc_difference
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.metrics import summary_metrics

    recipes = [parse_recipe(r) for r in args.backbones]
    stage_sets = [tuple(s.split(",")) for s in args.stage_sets]
    all_stages = tuple(s for s in ("1", "2", "3", "4", "5", "6", "7", "top") if any(s in ss for ss in stage_sets))
    print(f"# load before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    x300, labels, split = load_cells(300)
    y = (labels["probability"].to_numpy() >= 0.5).astype(np.int64)
    tr, va = split == "train", split == "validation"
    feats, seconds = side_by_side_features(x300, recipes, all_stages)
    for r, f in feats.items():  # all cells (test included) so --test-once needs no second pass
        args.cache.mkdir(parents=True, exist_ok=True)
        np.save(args.cache / f"{r[0]}_{r[1]}_1view_{'-'.join(all_stages)}.npy", f)
    print(f"{len(y)} cells: {tr.sum()} train, {va.sum()} validation (test not read); "
          f"majority-class validation accuracy {max(y[va].mean(), 1 - y[va].mean()):.3f}", flush=True)
    rows, probas, models = [], {}, {}
    for r in recipes:
        for ss in stage_sets:
            cols = stage_columns(r[0], all_stages, ss)
            for C in args.c_grid:
                t0 = time.perf_counter()
                m = fit_elastic_net(feats[r][tr][:, cols], y[tr], ["ok", "defect"], C=C, l1_ratio=0.5)
                fit_s = time.perf_counter() - t0
                p = m.predict_proba(feats[r][va][:, cols])
                key = (r[0], r[1], ",".join(ss), C)
                probas[key], models[key] = p[:, 1], m
                rows.append({"backbone": r[0], "size": r[1], "stages": ",".join(ss), "C": C, "features": len(cols),
                             "nonzero": m.nonzero_features, **summary_metrics(y[va], p), "fit_s": round(fit_s, 1),
                             "feature_s": round(seconds[r][0], 1), "shrink_s": round(seconds[r][1], 1)})
                print(f"  {r[0]} {r[1]} px stages {','.join(ss):13s} C={C:<5} val AUC {rows[-1]['roc_auc']:.3f} "
                      f"acc {rows[-1]['accuracy']:.3f} ({m.nonzero_features}/{len(cols)} features, fit {fit_s:.1f}s)",
                      flush=True)
    table = pd.DataFrame(rows)
    best = {r: table[(table.backbone == r[0]) & (table["size"] == r[1])].sort_values("roc_auc").iloc[-1]
            for r in recipes}
    reference = (recipes[0][0], recipes[0][1], ",".join(stage_sets[0]), args.reference_c)
    heads = {reference: (reference[0], reference[1], stage_sets[0], models[reference])}
    for b in best.values():
        key = (b.backbone, int(b["size"]), b.stages, float(b.C))
        heads[key] = (key[0], key[1], key[2].split(","), models[key])
    print(f"one-image latency: {args.calls} calls per recipe, interleaved, ONNX Runtime spin-waiting "
          f"{'on' if args.spin else 'off'}", flush=True)
    lat = interleaved_latency(x300[va], heads, calls=args.calls, spin=args.spin)
    print(f"# load after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nbest validation recipe of each backbone and size (reference: {reference}), "
          f"paired bootstrap of (recipe - reference) validation AUC, 95%:")
    for key, (p50, p99) in lat.items():
        row = table[(table.backbone == key[0]) & (table["size"] == key[1]) & (table.stages == key[2])
                    & (table.C == key[3])].iloc[0]
        d = paired_auc_difference(y[va], probas[key], probas[reference])
        print(f"  {key[0]} {key[1]} px stages {key[2]:13s} C={key[3]:<5} val AUC {row.roc_auc:.3f} "
              f"acc {row.accuracy:.3f}  delta {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]  "
              f"features {row.feature_s:.0f}s for {len(y)} cells ({row.feature_s / len(y) * 1000:.1f} ms/cell "
              f"in batches of 32)  one image p50 {p50:.1f} ms p99 {p99:.1f} ms")


def test_once(args) -> None:
    """The test split of ONE recipe already chosen on validation, beside the reference recipe."""
    from defect_assets.ml.evaluation import bootstrap_intervals, paired_auc_difference
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.metrics import summary_metrics

    _, labels, split = load_cells(300)
    y = (labels["probability"].to_numpy() >= 0.5).astype(np.int64)
    tr, te = split == "train", split == "test"
    scores = {}
    for text in (args.test_once, args.test_reference):
        backbone, size, stages, C = text.split(":")
        files = sorted(args.cache.glob(f"{backbone}_{size}_1view_*.npy"))
        if not files:
            raise SystemExit(f"no cached features for {backbone} {size} px in {args.cache}: run --backbones first")
        f = np.load(files[0])
        cols = stage_columns(backbone, tuple(files[0].stem.split("_1view_")[1].split("-")), tuple(stages.split(",")))
        m = fit_elastic_net(f[tr][:, cols], y[tr], ["ok", "defect"], C=float(C), l1_ratio=0.5)
        p = m.predict_proba(f[te][:, cols])
        scores[text] = p[:, 1]
        ci = bootstrap_intervals(y[te], p[:, 1], (p[:, 1] >= 0.5) == y[te])
        r = summary_metrics(y[te], p)
        print(f"  TEST {text}: AUC {r['roc_auc']:.3f} [{ci['roc_auc'][0]:.3f}, {ci['roc_auc'][1]:.3f}] "
              f"acc {r['accuracy']:.3f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}] ({te.sum()} cells, "
              f"majority {max(y[te].mean(), 1 - y[te].mean()):.3f})")
    d = paired_auc_difference(y[te], scores[args.test_once], scores[args.test_reference])
    print(f"  TEST paired (chosen - reference) AUC {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 224])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lite_feats"))
    ap.add_argument("--c-grid", type=float, nargs="+", default=[0.02, 0.05, 0.2])
    ap.add_argument("--mlp", action="store_true", help="also a trained MLP head on the same features")
    ap.add_argument("--backbones", nargs="+", metavar="BACKBONE:SIZE",
                    help="compare these side by side (one view); the first is the reference")
    ap.add_argument("--stage-sets", nargs="+", default=["4,5,6,top"],
                    help="with --backbones: stage sets tried (the first is the reference's)")
    ap.add_argument("--reference-c", type=float, default=0.02, help="with --backbones: the reference's C")
    ap.add_argument("--calls", type=int, default=200, help="with --backbones: one-image calls per recipe")
    ap.add_argument("--spin", action="store_true",
                    help="with --backbones: time with ONNX Runtime's thread spin-waiting on (the service's setting)")
    ap.add_argument("--test-once", metavar="BACKBONE:SIZE:STAGES:C",
                    help="test split of this recipe (chosen on validation before), from --backbones' cache")
    ap.add_argument("--test-reference", default="lite0:300:4,5,6,top:0.02", metavar="BACKBONE:SIZE:STAGES:C")
    args = ap.parse_args()
    if args.test_once:
        return test_once(args)
    if args.backbones:
        return compare_backbones(args)
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
