"""Honest evaluation: the decision threshold is chosen on the validation split only, every
metric is computed on the held-out test split only, and the report carries the curves and the
confusion matrix a person needs to judge a model on imbalanced data."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

THRESHOLD_METHODS = ("max_f1", "cost")


class ThresholdError(ValueError):
    """No meaningful threshold can be chosen (e.g. no defect in the validation split)."""


def choose_threshold(y_val: np.ndarray, score_val: np.ndarray, method: str = "max_f1",
                     cost_missed_defect: float = 5.0, cost_false_alarm: float = 1.0) -> float:
    """The defect-probability threshold (decide 'defect' when score >= threshold).

    max_f1: the candidate score with the highest F1 on validation (ties: the higher threshold).
    cost: the candidate minimizing cost_missed_defect * FN + cost_false_alarm * FP.
    """
    y_val = np.asarray(y_val).astype(int)
    score_val = np.asarray(score_val, dtype=np.float64)
    if len(y_val) == 0:
        raise ThresholdError("the validation split is empty: cannot choose a decision threshold")
    if y_val.sum() == 0:
        raise ThresholdError("the validation split has no defect: a threshold chosen on it would be meaningless; "
                             "add defective images (or a larger validation_fraction) and re-run")
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, not {method!r}")
    cands = np.unique(score_val)
    pos = y_val == 1
    # predictions for each candidate t: score >= t
    tp = np.array([(score_val[pos] >= t).sum() for t in cands], dtype=np.float64)
    fp = np.array([(score_val[~pos] >= t).sum() for t in cands], dtype=np.float64)
    fn = pos.sum() - tp
    if method == "max_f1":
        f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
        best = np.flatnonzero(f1 == f1.max())[-1]
    else:
        cost = cost_missed_defect * fn + cost_false_alarm * fp
        best = np.flatnonzero(cost == cost.min())[-1]
    return float(cands[best])


def _curve_points(x: np.ndarray, y: np.ndarray, t: np.ndarray, max_points: int = 200) -> dict:
    if len(x) > max_points:
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y, t = x[keep], y[keep], t[keep] if len(t) == len(x) else t
    return {"x": [float(v) for v in x], "y": [float(v) for v in y]}


def binary_report(y_test: np.ndarray, score_test: np.ndarray, threshold: float) -> dict:
    """Metrics of the 'defect' decision (score >= threshold) on the test split."""
    y = np.asarray(y_test).astype(int)
    s = np.asarray(score_test, dtype=np.float64)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    out = {
        "task": "binary", "threshold": float(threshold), "n": int(len(y)), "positives": int(y.sum()),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if both else float("nan"),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, s)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, s)) if y.sum() else float("nan"),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "majority_baseline": majority_baseline(y, 2),
    }
    ci = bootstrap_intervals(y, s, pred == y)
    out["accuracy_ci"], out["roc_auc_ci"] = ci["accuracy"], ci["roc_auc"] if both else [float("nan")] * 2
    if both:
        fpr, tpr, t = skm.roc_curve(y, s)
        prec, rec, t2 = skm.precision_recall_curve(y, s)
        out["roc_curve"] = _curve_points(fpr, tpr, t)
        out["pr_curve"] = _curve_points(rec, prec, t2)
    return out


def multiclass_report(y_test: np.ndarray, proba_test: np.ndarray, classes: list[str]) -> dict:
    """Arg-max decision; per-class precision/recall/F1, one-vs-rest ROC, K x K confusion matrix."""
    y = np.asarray(y_test).astype(int)
    k = len(classes)
    pred = proba_test.argmax(1)
    p, r, f, support = skm.precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    per_class, curves = [], {}
    for c in range(k):
        yc = (y == c).astype(int)
        auc = float(skm.roc_auc_score(yc, proba_test[:, c])) if 0 < yc.sum() < len(yc) else float("nan")
        per_class.append({"class": classes[c], "precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                          "support": int(support[c]), "roc_auc_ovr": auc})
        if not np.isnan(auc):
            fpr, tpr, t = skm.roc_curve(yc, proba_test[:, c])
            curves[classes[c]] = _curve_points(fpr, tpr, t)
    aucs = [pc["roc_auc_ovr"] for pc in per_class if not np.isnan(pc["roc_auc_ovr"])]
    # intervals: accuracy of the arg-max, and ROC AUC of "any class but the first" (the defect score)
    ci = bootstrap_intervals((y > 0).astype(int), 1 - proba_test[:, 0], pred == y)
    return {
        "majority_baseline": majority_baseline(y, k), "accuracy_ci": ci["accuracy"], "roc_auc_ci": ci["roc_auc"],
        "task": "multiclass", "classes": classes, "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        "precision": float(np.mean(p)), "recall": float(np.mean(r)), "f1": float(np.mean(f)),
        "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "per_class": per_class, "ovr_roc_curves": curves,
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=list(range(k))).tolist(),
    }


# --- baselines and intervals: how far a figure can move by chance alone -------------------------

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 20261126  # fixed: the same evaluation gives the same interval every time


def majority_baseline(y: np.ndarray, num_classes: int | None = None) -> float:
    """Accuracy of always answering the most frequent class of ``y`` (what an accuracy must beat)."""
    y = np.asarray(y).astype(int)
    if len(y) == 0:
        return float("nan")
    counts = np.bincount(y, minlength=num_classes or 0)
    return float(counts.max() / len(y))


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _auc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    return float(skm.roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def bootstrap_intervals(y: np.ndarray, score: np.ndarray, correct: np.ndarray, level: float = 0.95,
                        n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    """Percentile bootstrap intervals over resampled test items, {name: [low, high]}: accuracy
    (the share of ``correct`` decisions) and ROC AUC of the defect ``score`` against binary ``y``."""
    y, score = np.asarray(y).astype(int), np.asarray(score, np.float64)
    if len(y) == 0:
        return {"accuracy": [float("nan")] * 2, "roc_auc": [float("nan")] * 2}
    idx = _resamples(len(y), n_boot, seed)
    acc = np.asarray(correct, np.float64)[idx].mean(axis=1)
    aucs = np.array([_auc_or_nan(y[i], score[i]) for i in idx])
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    auc_ci = np.nanpercentile(aucs, q).tolist() if np.isfinite(aucs).any() else [float("nan")] * 2
    return {"accuracy": np.percentile(acc, q).tolist(), "roc_auc": auc_ci}


def paired_auc_difference(y: np.ndarray, candidate: np.ndarray, reference: np.ndarray, level: float = 0.95,
                          n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """ROC AUC of ``candidate`` minus that of ``reference``, both scored on the same items, with a
    paired percentile bootstrap interval (each resample draws the same items for both). Seeded:
    the same inputs give the same interval, so a gate built on it does not flip by chance."""
    y = np.asarray(y).astype(int)
    a, b = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if not 0 < y.sum() < len(y):
        raise ValueError("the paired AUC comparison needs both classes among the test items")
    delta = _auc_or_nan(y, a) - _auc_or_nan(y, b)
    diffs = np.array([_auc_or_nan(y[i], a[i]) - _auc_or_nan(y[i], b[i]) for i in _resamples(len(y), n_boot, seed)])
    lo, hi = np.nanpercentile(diffs, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"delta": float(delta), "low": float(lo), "high": float(hi), "n": int(len(y)), "resamples": n_boot}
