"""Where one image's time goes in the anomaly family's served path: a REGISTERED anomaly model loaded
as the service loads it (``ml.scorer.load_registered(compiled=True)``), one full-size ELPV cell.

    nice -n 5 .venv/bin/python bench/anomaly_profile.py --store DIR --version VERSION [--runs 200]
    nice -n 5 .venv/bin/python bench/anomaly_profile.py --train [--scoring location] [--dims N]

``--train`` first fits the family (``fit_anomaly``, defaults unless given) on ELPV's good train cells
(defect probability 0) and registers it in a temporary store. Figures, in milliseconds, p50 and p99
of one call at a time after warm-up, on this machine as it is now (its load average is printed):
- ``predict_images``: the encoded 300 px PNG -> probability (decode, preprocessing, model): what the
  evaluation's latency measures (``pipeline.evaluate.measure_latency``);
- ``predict_proba``: the decoded 300x300 uint8 cell -> probability;
- ``explain`` (the map at the cell's size) and ``photo_map`` (the map of the whole photo);
- with the current code, the parts of the one graph: the backbone to the deepest stage used, the
  patch features, the whole scoring graph.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed(fn, runs: int, warm: int = 3) -> str:
    for _ in range(warm):
        fn()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1000)
    return f"p50 {np.percentile(t, 50):6.1f} ms  p99 {np.percentile(t, 99):6.1f} ms  ({runs} calls)"


def train_and_register(args) -> tuple[object, str]:
    from backbone_experiments import load_cells

    from defect_assets.ml.patchcore import KIND, MODEL_FILE, fit_anomaly
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    x, labels, splits = load_cells(300)
    good = (splits == "train") & (labels["probability"].to_numpy() == 0)
    t0 = time.perf_counter()
    model = fit_anomaly(x[good], scoring=args.scoring, kinds=args.kinds, dims=args.dims, grid_stage=args.grid_stage,
                        log=print)
    print(f"trained on {good.sum()} good cells in {time.perf_counter() - t0:.1f}s")
    root = Path(tempfile.mkdtemp(prefix="anomaly-profile-"))
    registry = ModelRegistry(LocalObjectStore(root))
    card = registry.register("anomaly", {MODEL_FILE: model.to_bytes()},
                             {"kind": KIND, "task": "binary", "classes": ["ok", "defect"],
                              "input": {"size": 300, "channels": 1}, "anomaly": model.meta()})
    print(f"registered as {card.version} in {root} (profile it again: --store {root} --version {card.version})")
    return registry, card.version


def main() -> None:
    import defect_assets.pipeline.family_registry  # noqa: F401  (registers the anomaly card kind)
    from defect_assets.datasets.elpv import elpv_root
    from defect_assets.ml.scorer import load_registered

    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path)
    ap.add_argument("--version")
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--scoring", default="location")
    ap.add_argument("--kinds", type=int, default=2)
    ap.add_argument("--dims", type=int, default=None)
    ap.add_argument("--grid-stage", default=None)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--image", default="images/cell0001.png")
    args = ap.parse_args()
    if args.train:
        registry, version = train_and_register(args)
    else:
        from defect_assets.storage import LocalObjectStore
        from defect_assets.storage.registry import ModelRegistry

        registry, version = ModelRegistry(LocalObjectStore(args.store)), args.version
    scorer = load_registered(registry, version, compiled=True)
    meta = scorer.card.to_dict()["anomaly"]
    image = (elpv_root() / args.image).read_bytes()
    cell = scorer.prepare(image)
    print(f"# {version}: scoring {meta.get('scoring', 'nearest')}, kinds {meta.get('kinds', 1)}, "
          f"bank {meta.get('bank_size')}, dims {meta.get('dims')}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} before")
    print(f"predict_images (PNG -> p)      {timed(lambda: scorer.predict_images([image]), args.runs)}")
    print(f"predict_proba (uint8 -> p)     {timed(lambda: scorer.predict_proba(cell[None]), args.runs)}")
    few = max(10, args.runs // 5)
    print(f"explain (map at 300 px)        {timed(lambda: scorer.explain(cell), few)}")
    print(f"photo_map (map of the photo)   {timed(lambda: scorer.photo_map(scorer.pixels(image)), few)}")
    model = scorer.model
    if hasattr(model, "onnx_graph"):  # the parts of the one graph (current code)
        from defect_assets.ml.anomaly_onnx import features_graph
        from defect_assets.ml.lite_onnx import OnnxExtractor, session

        x = cell.reshape(1, 300, 300, 1)
        backbone = OnnxExtractor(model.backbone, 1, model.stages, maps=True)
        feats = session(features_graph(model, 1).SerializeToString(), spinning=False)
        print(f"  backbone to stage {max(model.stages)}        {timed(lambda: backbone(x), args.runs)}")
        print(f"  + patch features             {timed(lambda: feats.run(None, {'pixels': x}), args.runs)}")
        print(f"  + scores (the whole graph)   {timed(lambda: model.run(x), args.runs)}")
    print(f"# load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
