"""Benchmark (issue 22): one ELPV model scored four ways in one run, with parity and bundle size.

    nice -n 5 .venv/bin/python bench/export.py [--train 600] [--val 200] [--golden 64] [--requests 200] [--seconds 8]
    .venv/bin/python bench/export.py --data-dir <clone>/data     # the main job's production champion instead

The model: an elastic net on EfficientNet-Lite0 stage features (the ELPV champion's recipe: whole
300 px gray cells, 1 view), trained quickly here on a seeded subset of ELPV (``--train`` cells;
the threshold chosen on ``--val`` other cells), registered in a temporary store. Compared, on the
same weights and the same full-size 300x300 cells (decoded and resized by each path's own code):

- ``tensorflow``: the Keras reference path (``features.runtime = keras``: the Keras port of Lite0,
  traced once with tf.function, then the NumPy head), i.e. the model without any ONNX;
- ``scorer (default)``: what ``ml/scorer.py`` serves today (Lite0 on ONNX Runtime + the NumPy head);
- ``onnxruntime bundle`` and ``openvino bundle``: the exported bundles' own ``predict.py``
  (``ExportedModel.predict_images``), one graph with the head inside.

Parity: each path's probabilities on ``--golden`` validation cells against ``scorer (default)``,
max |dp| and the decisions differing at the threshold. Latency: p50/p99 of one image per call, one
caller. Throughput: 32 threads each scoring one image per call for ``--seconds`` (no micro-batching:
what a line PC running predict.py in 32 threads gets; the service's batching is bench/serve.py's).
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def train_model(store, n_train: int, n_val: int, n_golden: int, seed: int = 0):
    from defect_assets.datasets.elpv import elpv_labels, elpv_root
    from defect_assets.ml.backbone import LITE_STAGES, extract_features, make_extractor
    from defect_assets.ml.evaluation import choose_threshold
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.preprocess import prepare_patch
    from defect_assets.storage.registry import ModelRegistry

    labels = elpv_labels()
    order = np.random.default_rng(seed).permutation(len(labels))
    tr, va = order[:n_train], order[n_train:n_train + n_val]
    root = elpv_root()
    data = {i: (root / labels["path"].iloc[i]).read_bytes() for i in np.concatenate([tr, va])}
    spec = {"backbone": "lite0", "stages": list(LITE_STAGES), "runtime": "onnxruntime"}
    fx = make_extractor(spec, (300, 300, 1))
    t0 = time.perf_counter()

    def feats(idx):
        return extract_features(fx, np.stack([prepare_patch(data[i], 300, 1) for i in idx]), batch_size=16)

    x_tr, x_va = feats(tr), feats(va)
    y = (labels["probability"].to_numpy() >= 0.5).astype(int)
    classes = ["ok", "defect"]
    model = fit_elastic_net(x_tr, y[tr], classes, C=0.1, l1_ratio=0.5, max_iter=2000)
    p_va = model.predict_proba(x_va)
    threshold = float(choose_threshold(y[va], p_va[:, 1]))
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y[va], p_va[:, 1]))
    registry = ModelRegistry(store)
    base = {"kind": "features+linear", "task": "binary", "classes": classes, "input": {"size": 300, "channels": 1},
            "inference": {"views": 1}, "data_version": {"id": f"elpv-seed{seed}-{n_train}", "batches": ["elpv"]}}
    card = registry.register("elastic_net", {"linear.npz": model.to_bytes()}, {**base, "features": spec})
    keras = registry.register("elastic_net", {"linear.npz": model.to_bytes()},
                              {**base, "features": {**spec, "runtime": "keras"}})
    golden = [data[i] for i in va[:n_golden]]
    print(f"trained on {n_train} ELPV cells ({time.perf_counter() - t0:.0f}s with features); validation AUC "
          f"{auc:.3f} on {n_val}; threshold {threshold:.4f} (max F1 on validation)", flush=True)
    return registry, card.version, keras.version, threshold, golden


def _copy(source, registry, version: str, keras: bool) -> str:
    """``version`` of ``source`` registered again in ``registry`` (an ensemble with its members); with
    ``keras``, every elastic net's features on the Keras port of its backbone (the TensorFlow path)."""
    import json

    card = source.card(version)
    files = {name: source.read_file(version, name) for name in card.files}
    fields = {k: v for k, v in card.to_dict().items() if k not in ("version", "family", "created", "files")}
    if card.kind == "ensemble":
        members = json.loads(files["members.json"])
        members["members"] = [_copy(source, registry, v, keras) for v in members["members"]]
        files["members.json"] = json.dumps(members).encode()
        fields["members"] = members["members"]
    elif keras and card.kind == "features+linear":
        fields["features"] = {**fields["features"], "runtime": "keras"}
    return registry.register(card.family, files, fields).version


def production_model(source_dir: Path, store, n_golden: int, seed: int = 0):
    """The production champion of another data folder (a main job's), copied into ``store`` twice: as
    it is (Lite0 on ONNX Runtime) and with its elastic nets' features on the Keras port (the
    TensorFlow path; an anomaly member has no Keras path: its scoring is one ONNX graph), with its
    production threshold; golden: ``n_golden`` seeded ELPV cells at full size."""
    from defect_assets.datasets.elpv import elpv_labels, elpv_root
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    source = ModelRegistry(LocalObjectStore(source_dir / "artifacts"))
    production = source.production() or {}
    if "version" not in production:
        raise SystemExit(f"no production model in {source_dir}/artifacts (run ./run demo there first)")
    card = source.card(production["version"])
    if card.kind not in ("features+linear", "ensemble"):
        raise SystemExit(f"the production model is a {card.kind!r}; this bench compares models on Lite0 features")
    registry = ModelRegistry(store)
    onnx, keras = _copy(source, registry, card.version, False), _copy(source, registry, card.version, True)
    threshold = float(production["threshold"])
    labels = elpv_labels()
    pick = np.random.default_rng(seed).permutation(len(labels))[:n_golden]
    golden = [(elpv_root() / labels["path"].iloc[i]).read_bytes() for i in pick]
    members = f" (members {', '.join(card.members)})" if card.kind == "ensemble" else ""
    print(f"production model {card.version}{members} of {source_dir} (threshold {threshold:.4f}); "
          f"{n_golden} ELPV cells", flush=True)
    return registry, onnx, keras, threshold, golden


def latency(fn, images, n: int) -> tuple[float, float]:
    for im in images[:3]:
        fn([im])
    times = []
    for k in range(n):
        t = time.perf_counter()
        fn([images[k % len(images)]])
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def throughput(fn, images, clients: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def work(c):
        k = c
        while time.perf_counter() < stop:
            fn([images[k % len(images)]])
            counts[c] += 1
            k += clients

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--golden", type=int, default=64)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--data-dir", type=Path, help="a main job's data folder: its production champion (an elastic "
                    "net on Lite0 features) is measured instead of a model trained here")
    args = ap.parse_args()

    from defect_assets.ml.export import export_bundle, load_bundle_runtime
    from defect_assets.ml.scorer import load_registered
    from defect_assets.storage import LocalObjectStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    store = LocalObjectStore(tmp / "artifacts")
    if args.data_dir:
        registry, version, keras_version, threshold, golden = production_model(args.data_dir.resolve(), store,
                                                                                args.golden)
    else:
        registry, version, keras_version, threshold, golden = train_model(store, args.train, args.val, args.golden)
    default = load_registered(registry, version, compiled=True)
    paths = {"tensorflow (Keras Lite0 + NumPy head)": load_registered(registry, keras_version, compiled=True)
             .predict_images,
             "scorer default (Lite0 on ORT + NumPy head)": default.predict_images}
    if default.card.kind == "ensemble":  # the anomaly member runs its ONNX graph on either path
        paths = {name.replace("NumPy head", "heads"): fn for name, fn in paths.items()}
    sizes = {}
    for fmt, name in (("onnx", "onnxruntime bundle (predict.py)"), ("openvino", "openvino bundle (predict.py)")):
        bundle = export_bundle(registry, version, fmt, tmp / "out", threshold)
        sizes[name] = (bundle.size_bytes, bundle.zip_path.stat().st_size)
        paths[name] = load_bundle_runtime(bundle.folder).predict_images
    ref = default.predict_images(golden)
    ref_dec = ref[:, 1] >= threshold
    rows = []
    for name, fn in paths.items():
        p = fn(golden)
        diff = float(np.abs(p - ref).max())
        edge = np.abs(ref[:, 1] - threshold) <= 1e-4  # a max-F1 threshold is a validation score: the cell on it
        differ = int((((p[:, 1] >= threshold) != ref_dec) & ~edge).sum())
        p50, p99 = latency(fn, golden, args.requests)
        ips = throughput(fn, golden, args.clients, args.seconds)
        rows.append((name, diff, differ, p50, p99, ips))
        print(f"  measured {name}", flush=True)
    what = ("an ensemble: " + ", ".join(f"{registry.card(m).kind} x {w:.2f}" for m, w in
                                        zip(default.card.members, default.card.weights))
            if default.card.kind == "ensemble" else "elastic net on Lite0 stages 4,5,6,top")
    print(f"\nmodel {version}: {what}, 300x300 gray, 1 view; {len(golden)} full-size ELPV cells; "
          f"{os.cpu_count()} cores")
    print(f"{'path':44} {'max|dp| vs scorer':>17} {'decisions differ*':>17} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'img/s @' + str(args.clients):>10}")
    for name, diff, differ, p50, p99, ips in rows:
        print(f"{name:44} {diff:17.2e} {differ:>17} {p50:8.1f} {p99:8.1f} {ips:10.1f}")
    print("* outside 1e-4 of the threshold (a cell whose score is within it may flip on a last-bit difference)")
    tf_p99 = rows[0][4]
    for name, *_, p99, _ips in rows[1:]:
        print(f"p99 {name} / tensorflow: {p99 / tf_p99:.2f}x (target <= 0.5x)")
    for name, (folder, zipped) in sizes.items():
        print(f"bundle {name}: {folder / 1e6:.1f} MB folder, {zipped / 1e6:.1f} MB zip")


if __name__ == "__main__":
    main()
