"""Confidence intervals for proportions (NumPy only): what an accuracy on a few hundred test
images is worth. A 443-image test split moves accuracy by about +-2.5 points by chance alone."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (nan, nan) when n is 0."""
    if not n or n <= 0 or not math.isfinite(n) or not math.isfinite(successes):
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def majority_baseline(positives: float, n: float) -> float:
    """Accuracy of always answering the more frequent class."""
    if not n or not math.isfinite(positives):
        return float("nan")
    return max(positives, n - positives) / n
