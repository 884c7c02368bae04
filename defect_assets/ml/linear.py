"""Elastic-net logistic regression on pretrained features (the wood-knots recipe), stored as
plain arrays: the fitted model is a standardization plus one linear layer, so saving it needs
no pickle and loading it needs no scikit-learn object."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np


@dataclass
class LinearSoftmax:
    """p = softmax(((x - mean) / scale) @ coef.T + intercept); binary has one row of coef."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (1, D) for binary, (K, D) otherwise
    intercept: np.ndarray
    classes: list[str]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        z = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1 - p1, p1], axis=1).astype(np.float32)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept,
                 classes=np.array(json.dumps(self.classes)))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearSoftmax:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        return cls(z["mean"], z["scale"], z["coef"], z["intercept"], json.loads(str(z["classes"])))

    @property
    def nonzero_features(self) -> int:
        return int(np.count_nonzero(np.any(self.coef != 0, axis=0)))


def soft_binary_rows(x: np.ndarray, p_defect: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft binary targets as weighted rows: each item once as a defect with weight p and once as
    sound with weight 1 - p, so the logistic loss is the cross-entropy against p (ELPV's raters
    said 1/3 or 2/3 for the cells they were unsure of). Returns (x, y, sample weights)."""
    p = np.clip(np.asarray(p_defect, np.float64), 0, 1)
    keep1, keep0 = p > 0, p < 1
    xs = np.concatenate([x[keep1], x[keep0]])
    ys = np.concatenate([np.ones(keep1.sum(), np.int64), np.zeros(keep0.sum(), np.int64)])
    return xs, ys, np.concatenate([p[keep1], 1 - p[keep0]])


def fit_elastic_net(x: np.ndarray, y: np.ndarray, classes: list[str], C: float = 0.1, l1_ratio: float = 0.5,
                    class_weight: str | None = "balanced", max_iter: int = 2000, seed: int = 0,
                    sample_weight: np.ndarray | None = None) -> LinearSoftmax:
    """scikit-learn's saga elastic-net logistic regression on standardized features."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    xs = (x - mean) / scale
    clf = LogisticRegression(solver="saga", C=C, l1_ratio=l1_ratio,  # l1_ratio in (0, 1): elastic net
                             class_weight=class_weight, max_iter=max_iter, random_state=seed, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(xs, y, sample_weight=sample_weight)
    coef, intercept = clf.coef_, clf.intercept_
    if len(classes) > 2 and coef.shape[0] != len(classes):  # a class absent from training
        full_c = np.zeros((len(classes), coef.shape[1]))
        full_i = np.full(len(classes), -1e9)
        for row, c in enumerate(clf.classes_):
            full_c[c], full_i[c] = coef[row], intercept[row]
        coef, intercept = full_c, full_i
    return LinearSoftmax(mean, scale, coef, intercept, list(classes))
