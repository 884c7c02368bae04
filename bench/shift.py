"""Issue 25: ELPV cell types (mono / poly) as groups. Train a linear head on backbone features of
one cell type, choose its threshold on that type's validation images, and report on the test images
of the same type, of the other type, and of both, per group (accuracy, recall, AUC with 95%
intervals, the group's majority baseline), beside each batch's input drift (domain-classifier AUC
on backbone features, permutation p-value): a batch of the same type, and a batch of the other.

  nice -n 5 env PYTHONPATH=$PWD python bench/shift.py [--per-type 400] [--size 96] > bench/results/shift.txt

Defect: ELPV probability >= 0.5. Splits: a seeded shuffle per type (60/20/20); only validation chooses."""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression

from defect_assets.datasets.elpv import elpv_labels, elpv_root
from defect_assets.ml.drift import domain_classifier_drift
from defect_assets.ml.evaluation import choose_threshold
from defect_assets.ml.groups import group_metrics
from defect_assets.pipeline.features import backbone_features

SPEC = {"backbone": "lite0", "stages": ["4", "5", "6", "top"], "runtime": "onnxruntime"}


def load(rows, size):
    root = elpv_root()
    return np.stack([np.asarray(Image.open(root / p).convert("L").resize((size, size), Image.BILINEAR))
                     for p in rows["path"]])


def fmt(g):
    ci = lambda v: f"[{v[0]:.2f},{v[1]:.2f}]"  # noqa: E731
    return (f"{g['group']:<6} {g['n']:>4} {g['positives']:>4}  acc {g['accuracy']:.3f} {ci(g['accuracy_ci'])}  "
            f"recall {g['recall']:.3f} {ci(g['recall_ci'])}  AUC {g['roc_auc']:.3f} {ci(g['roc_auc_ci'])}  "
            f"majority {g['majority_baseline']:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=400)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--permutations", type=int, default=50)
    args = ap.parse_args()
    labels = elpv_labels()
    rng = np.random.default_rng(0)
    parts = {}
    for kind in ("mono", "poly"):
        rows = labels[labels["type"] == kind]
        rows = rows.iloc[rng.permutation(len(rows))[: args.per_type]].reset_index(drop=True)
        n = len(rows)
        split = np.array(["train"] * int(0.6 * n) + ["validation"] * int(0.2 * n)
                         + ["test"] * (n - int(0.6 * n) - int(0.2 * n)))
        t0 = time.perf_counter()
        feats = backbone_features(load(rows, args.size), SPEC)
        print(f"# {kind}: {n} cells, features {feats.shape} in {time.perf_counter() - t0:.0f} s")
        parts[kind] = dict(x=feats, y=(rows["probability"] >= 0.5).to_numpy().astype(int), split=split)
    print(f"# ELPV, lite0 features at {args.size} px, {args.per_type} cells per type, defect = p >= 0.5, "
          f"{args.permutations} permutations\n")
    for train_kind, other in (("mono", "poly"), ("poly", "mono")):
        tr, ot = parts[train_kind], parts[other]
        m = lambda p, s: p["split"] == s  # noqa: E731
        mu, sd = tr["x"][m(tr, "train")].mean(0), tr["x"][m(tr, "train")].std(0) + 1e-6
        clf = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
        clf.fit((tr["x"][m(tr, "train")] - mu) / sd, tr["y"][m(tr, "train")])
        score = lambda x, c=clf, a=mu, b=sd: c.predict_proba((x - a) / b)[:, 1]  # noqa: E731
        thr = choose_threshold(tr["y"][m(tr, "validation")], score(tr["x"][m(tr, "validation")]))
        y = np.r_[tr["y"][m(tr, "test")], ot["y"][m(ot, "test")]]
        s = np.r_[score(tr["x"][m(tr, "test")]), score(ot["x"][m(ot, "test")])]
        g = np.r_[[train_kind] * int(m(tr, "test").sum()), [other] * int(m(ot, "test").sum())]
        print(f"## trained on {train_kind} (threshold {thr:.3f}, chosen on {train_kind} validation)")
        print("group     n  def  figures on the test images (95% intervals)")
        for row in group_metrics(y, s, thr, g, "cell_type"):
            print(fmt(row) + ("   <- in distribution" if row["group"] == train_kind else "   <- other cell type"))
        print(fmt(group_metrics(y, s, thr, np.array(["both"] * len(y)), "all")[0]))
        ref = tr["x"][m(tr, "train")]
        for name, batch in ((f"{train_kind} (same type)", tr["x"][~m(tr, "train")]),
                            (f"{other} (other type)", ot["x"])):
            t0 = time.perf_counter()
            d = domain_classifier_drift(ref, batch, permutations=args.permutations)
            print(f"drift of a batch of {name:<20} n={len(batch):>4}: domain AUC {d.auc:.3f}, chance 95% "
                  f"{d.null_auc_95:.3f}, p {d.p_value:.3f} -> "
                  f"{'DIFFERS (held back)' if d.differs() else 'like training'}"
                  f"  ({time.perf_counter() - t0:.0f} s)")
        print()


if __name__ == "__main__":
    main()
