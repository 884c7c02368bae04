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
