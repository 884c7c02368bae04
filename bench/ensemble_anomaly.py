"""Experiment: does the anomaly family (trained on good cells only) add to the supervised champion?

    .venv/bin/python bench/ensemble_anomaly.py --data-dir data [--against OLD_DATA_DIR]

Reads the latest elastic-net and anomaly models a main job left in ``--data-dir``, scores the
validation and test splits through the one scorer, and averages the two probabilities with the
weight chosen on validation AUC only (the ensemble family's rule: a grid of weights). Prints
validation and test ROC AUC for each and for the blend, the paired bootstrap of the test AUC
difference against the elastic net alone, and, with ``--against``, against another data folder's
production champion on the same test images. The test split chooses nothing.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--against", metavar="DATA_DIR")
    args = p.parse_args()

    from quality import champion_predictions, latest_evaluations, stored
    from sklearn.metrics import roc_auc_score

    import defect_assets.pipeline.family_registry  # noqa: F401  (registers every family's scorer kind)
    from defect_assets.ml.evaluation import bootstrap_intervals, paired_auc_difference
    from defect_assets.ml.scorer import load_registered
    from defect_assets.pipeline.training import split_data
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    store = LocalObjectStore(Path(args.data_dir).resolve() / "artifacts")
    registry = ModelRegistry(store)
    hist = latest_evaluations(store)
    patches = stored(store, "labeled_patches")
    scores = {}
    for family in ("elastic_net", "anomaly"):
        scorer = load_registered(registry, hist.loc[family, "model_version"])
        val = split_data(patches, "validation", "binary", scorer.classes)
        test = split_data(patches, "test", "binary", scorer.classes)
        scores[family] = (scorer.predict_proba(val.x)[:, 1], scorer.predict_proba(test.x)[:, 1])
    yv, yt = val.y, test.y
    grid = np.round(np.arange(0, 1.0001, 0.05), 2)
    val_auc = [roc_auc_score(yv, (1 - w) * scores["elastic_net"][0] + w * scores["anomaly"][0]) for w in grid]
    best = float(grid[int(np.argmax(val_auc))])
    blend_t = (1 - best) * scores["elastic_net"][1] + best * scores["anomaly"][1]
    rows = []
    for name, (pv, pt) in {**scores, f"blend (anomaly weight {best})": (None, blend_t)}.items():
        auc = roc_auc_score(yt, pt)
        lo, hi = bootstrap_intervals(yt, pt, np.ones(len(yt)))["roc_auc"]
        rows.append({"model": name, "val_auc": max(val_auc) if pv is None else roc_auc_score(yv, pv),
                     "test_auc": auc, "test_auc_low": lo, "test_auc_high": hi})
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    print("validation AUC per anomaly weight:", dict(zip(grid.tolist(), np.round(val_auc, 4).tolist())))
    d = paired_auc_difference(yt, blend_t, scores["elastic_net"][1])
    print(f"blend - elastic net, test: {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
    if args.against:
        other_store = LocalObjectStore(Path(args.against).resolve() / "artifacts")
        _, other = champion_predictions(other_store, ModelRegistry(other_store))
        mine = pd.DataFrame({"image_id": test.table["image_id"].to_numpy(), "blend": blend_t,
                             "en": scores["elastic_net"][1], "y": yt})
        both = mine.merge(other, on="image_id")
        for col in ("en", "blend"):
            d = paired_auc_difference(both["y"].to_numpy(), both[col].to_numpy(), both["defect_score"].to_numpy())
            print(f"{col} - champion of {args.against} on {len(both)} test images: {d['delta']:+.4f} "
                  f"[{d['low']:+.4f}, {d['high']:+.4f}]")


if __name__ == "__main__":
    main()
