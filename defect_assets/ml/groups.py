"""Metrics per group (NumPy/sklearn only): a model good on one kind of image and useless on
another looks merely average over the whole test split. Any categorical column of a label file
(ELPV's ``cell_type``, a line, a camera) or the batch itself can be named as a grouping; each group
gets accuracy, recall and ROC AUC of the defect decision with 95% intervals and its own majority
baseline (what always answering its more frequent class scores)."""

from __future__ import annotations

import numpy as np

from defect_assets.ml.evaluation import _auc_or_nan, bootstrap_intervals
from defect_assets.ml.intervals import majority_baseline, wilson_interval


def group_metrics(y, score, threshold: float, groups, grouping: str) -> list[dict]:
    """One dict per group value (sorted): ``grouping``, ``group``, ``n``, ``positives``, ``accuracy``
    (+ ``accuracy_ci``, bootstrap), ``recall`` (+ ``recall_ci``, Wilson), ``roc_auc`` (+ ``roc_auc_ci``,
    bootstrap; nan when the group has one class only) and ``majority_baseline``. Binary ``y`` and a
    defect ``score``; the decision is score >= threshold."""
    y = np.asarray(y).astype(int)
    s = np.asarray(score, np.float64)
    g = np.asarray(groups).astype(str)
    if not len(y) == len(s) == len(g):
        raise ValueError(f"labels, scores and groups differ in length ({len(y)}, {len(s)}, {len(g)})")
    out = []
    for value in sorted(set(g.tolist())):
        m = g == value
        yy, ss = y[m], s[m]
        pred = (ss >= threshold).astype(int)
        pos = int(yy.sum())
        tp = int(((pred == 1) & (yy == 1)).sum())
        ci = bootstrap_intervals(yy, ss, pred == yy)
        out.append({
            "grouping": grouping, "group": value, "n": int(m.sum()), "positives": pos,
            "accuracy": float((pred == yy).mean()), "accuracy_ci": [float(v) for v in ci["accuracy"]],
            "recall": tp / pos if pos else float("nan"), "recall_ci": list(wilson_interval(tp, pos)),
            "roc_auc": _auc_or_nan(yy, ss), "roc_auc_ci": [float(v) for v in ci["roc_auc"]],
            "majority_baseline": majority_baseline(pos, int(m.sum())),
        })
    return out


def below_floor(groups: list[dict], metric: str, floor: float) -> list[dict]:
    """The groups whose ``metric`` is under ``floor`` (a nan figure never passes a floor)."""
    return [g for g in groups if not g.get(metric, float("nan")) >= floor]
