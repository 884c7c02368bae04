"""Drift of a score distribution: the population stability index (PSI) of the scores seen in
production against a reference sample (the model's scores on the held-out test split).

PSI = sum over bins of (p_cur - p_ref) * ln(p_cur / p_ref), with bins cut at the reference's
quantiles (deciles by default), so every bin holds about the same share of the reference. Common
reading: below 0.1 no shift, 0.1 to 0.25 a moderate one, above 0.25 a significant one. Two samples
of one distribution still differ by chance: with k bins, n current and m reference scores the
PSI is about (k - 1) * (1/n + 1/m) on average, which is why a day needs enough images before
its PSI means anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPSILON = 1e-4
"""Floor for a bin's share, so an empty bin gives a large but finite term."""


@dataclass(frozen=True)
class DriftResult:
    psi: float
    bins: int
    edges: list[float]
    reference_share: list[float]
    current_share: list[float]
    reference_n: int
    current_n: int

    @property
    def chance_level(self) -> float:
        """The PSI two samples of one distribution give on average at these sizes."""
        return (self.bins - 1) * (1 / max(self.current_n, 1) + 1 / max(self.reference_n, 1))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (ties merged, so fewer bins where the
    reference piles up on one value)."""
    qs = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def shares(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` per bin; a value equal to an edge goes to the bin above it."""
    idx = np.searchsorted(inner_edges, values, side="right")
    counts = np.bincount(idx, minlength=len(inner_edges) + 1).astype(np.float64)
    return counts / max(len(values), 1)


def population_stability_index(reference, current, bins: int = 10) -> DriftResult:
    """PSI of ``current`` against ``reference`` (1-d samples of scores)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"PSI needs scores on both sides (reference {len(ref)}, current {len(cur)})")
    if bins < 2:
        raise ValueError("PSI needs at least 2 bins")
    edges = quantile_edges(ref, bins)
    p_ref = np.clip(shares(ref, edges), EPSILON, None)
    p_cur = np.clip(shares(cur, edges), EPSILON, None)
    psi = float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref)))
    return DriftResult(psi=psi, bins=len(edges) + 1, edges=[float(e) for e in edges],
                       reference_share=[float(v) for v in p_ref], current_share=[float(v) for v in p_cur],
                       reference_n=len(ref), current_n=len(cur))


# --- drift of the inputs: a domain classifier on backbone features --------------------------------
#
# Why a domain classifier (and not MMD): its figure reads like any AUC (0.5: the batch cannot be told
# from training; 1.0: every image can), it needs no kernel bandwidth, it scales linearly with images
# and feature dimensions, and it gives each image a score, so "the images that look least like
# training" come for free (MMD gives one number). The level is a permutation test: the same
# cross-validated AUC with the batch/training labels shuffled, so small batches are judged honestly.

DOMAIN_FOLDS = 5
DOMAIN_PERMUTATIONS = 50
DOMAIN_SEED = 20261203
DRIFT_AUC_LEVEL = 0.75
"""A batch differs when its domain AUC is at least this AND above the permutation level (p < 0.05)."""
DRIFT_P_LEVEL = 0.05


@dataclass(frozen=True)
class DomainDrift:
    auc: float
    """Cross-validated ROC AUC of telling the batch's images from training images (0.5: no drift)."""
    p_value: float
    """Share of label permutations reaching this AUC ((1 + hits) / (1 + permutations))."""
    null_auc_95: float
    """The 95th percentile of the permuted AUCs: what chance alone reaches at these sizes."""
    permutations: int
    reference_n: int
    current_n: int
    current_scores: list[float]
    """Per current image, the out-of-fold probability that it is NOT a training image."""
    least_like_training: list[int]
    """Indices into the current images, least like training first."""

    def differs(self, auc_level: float = DRIFT_AUC_LEVEL, p_level: float = DRIFT_P_LEVEL) -> bool:
        return self.auc >= auc_level and self.p_value < p_level

    def summary(self) -> dict:
        return {"domain_auc": self.auc, "p_value": self.p_value, "null_auc_95": self.null_auc_95,
                "permutations": self.permutations, "reference_n": self.reference_n, "current_n": self.current_n}


def _cv_scores(x: np.ndarray, d: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros(len(d))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, d):
        clf = LogisticRegression(C=1.0, solver="liblinear", max_iter=500)
        clf.fit(x[tr], d[tr])
        out[te] = clf.predict_proba(x[te])[:, 1]
    return out


def domain_classifier_drift(reference, current, folds: int = DOMAIN_FOLDS, permutations: int = DOMAIN_PERMUTATIONS,
                            seed: int = DOMAIN_SEED, max_reference: int = 2000, top: int = 12) -> DomainDrift:
    """Cross-validated AUC of a logistic regression telling ``current`` (N, D) features from
    ``reference`` (M, D) ones, and its permutation p-value. Features are standardized on both sets
    together and reduced to at most 32 principal directions (a few hundred images in thousands of
    dimensions would otherwise be told apart by noise alone, permuted or not)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # many tiny fits: BLAS threads only contend
        return _domain_drift(reference, current, folds, permutations, seed, max_reference, top)


def _domain_drift(reference, current, folds, permutations, seed, max_reference, top) -> DomainDrift:
    from sklearn.metrics import roc_auc_score

    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    cur = np.asarray(current, np.float64).reshape(len(current), -1)
    rng = np.random.default_rng(seed)
    if len(ref) > max_reference:
        ref = ref[np.sort(rng.choice(len(ref), max_reference, replace=False))]
    k = min(folds, len(ref), len(cur))
    if k < 2:
        raise ValueError(f"domain drift needs at least 2 images on each side (reference {len(ref)}, "
                         f"current {len(cur)})")
    x = np.concatenate([ref, cur])
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    x = u[:, :min(32, len(s))] * s[:min(32, len(s))]
    d = np.r_[np.zeros(len(ref)), np.ones(len(cur))].astype(int)
    scores = _cv_scores(x, d, k, seed)
    auc = float(roc_auc_score(d, scores))
    null = np.array([roc_auc_score(p, _cv_scores(x, p, k, seed + i + 1))
                     for i, p in enumerate(rng.permutation(d) for _ in range(permutations))])
    p_value = float((1 + np.sum(null >= auc)) / (1 + permutations))
    cur_scores = scores[len(ref):]
    order = np.argsort(-cur_scores, kind="stable")[:top]
    return DomainDrift(auc=auc, p_value=p_value, null_auc_95=float(np.percentile(null, 95)),
                       permutations=permutations, reference_n=len(ref), current_n=len(cur),
                       current_scores=[float(v) for v in cur_scores], least_like_training=[int(i) for i in order])
