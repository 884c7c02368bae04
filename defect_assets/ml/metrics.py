"""Classification metrics on probability matrices (N, K); K = 2 for the binary task, where the
defect probability is column 1."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _clipped(proba: np.ndarray) -> np.ndarray:
    """Probabilities kept off 0 for the log loss, rows summing to 1 again (as scikit-learn would
    renormalize them, without its warning)."""
    p = np.clip(np.asarray(proba, np.float64), 1e-7, 1)
    return p / p.sum(axis=1, keepdims=True)


def summary_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, ROC AUC (one-vs-rest macro for K > 2) and log loss. For
    K = 2 the decision is proba[:, 1] >= threshold; for K > 2 the arg-max."""
    y_true = np.asarray(y_true)
    k = proba.shape[1]
    pred = (proba[:, 1] >= threshold).astype(int) if k == 2 else proba.argmax(1)
    out = {"accuracy": float(skm.accuracy_score(y_true, pred)),
           "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, pred)),
           "log_loss": float(skm.log_loss(y_true, _clipped(proba), labels=list(range(k))))}
    present = np.unique(y_true)
    if len(present) < 2:
        out["roc_auc"] = float("nan")
    elif k == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
    else:
        cols = [c for c in range(k) if c in present]
        p = proba[:, cols] / proba[:, cols].sum(1, keepdims=True)
        out["roc_auc"] = float(skm.roc_auc_score(y_true, p, multi_class="ovr", labels=cols)) if len(cols) > 2 else \
            float(skm.roc_auc_score(y_true == cols[1], p[:, 1]))
    return out
