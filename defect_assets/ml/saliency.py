"""Where a model looks: an occlusion map (cover one square of the input at a time with the
patch's mean grey and see how much the defect score moves) and its rendering over the patch.

It only needs a function from patches to defect scores, so every model family is explained the
same way, through the same scorer that evaluation and the service use.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def occlusion_map(score: Callable[[np.ndarray], np.ndarray], patch: np.ndarray, window: int | None = None,
                  stride: int | None = None) -> tuple[float, np.ndarray]:
    """(score of the patch, (h, w) map): how much covering each pixel's neighbourhood lowers
    the defect score (positive: that region pushes the score up), averaged over the squares
    that cover the pixel."""
    patch = np.asarray(patch)
    h, w = patch.shape[:2]
    window = window or max(2, min(h, w) // 4)
    stride = stride or max(1, window // 2)
    ys = sorted(set(list(range(0, max(h - window, 0) + 1, stride)) + [max(h - window, 0)]))
    xs = sorted(set(list(range(0, max(w - window, 0) + 1, stride)) + [max(w - window, 0)]))
    fill = np.asarray(patch.reshape(h * w, -1).mean(axis=0), dtype=np.float64).round().astype(patch.dtype)
    variants = [patch]
    for y in ys:
        for x in xs:
            v = patch.copy()
            v[y:y + window, x:x + window] = fill if patch.ndim == 3 else fill[0]
            variants.append(v)
    scores = np.asarray(score(np.stack(variants)), dtype=np.float64)
    base, drops = float(scores[0]), float(scores[0]) - scores[1:]
    total, cover = np.zeros((h, w)), np.zeros((h, w))
    for (y, x), d in zip(((y, x) for y in ys for x in xs), drops):
        total[y:y + window, x:x + window] += d
        cover[y:y + window, x:x + window] += 1
    return base, total / np.maximum(cover, 1)


def overlay(patch: np.ndarray, heat: np.ndarray, scale: int = 3, limit: float | None = None) -> np.ndarray:
    """An RGB picture of the patch (grey) with the map on top: red where covering lowers the
    defect score, blue where it raises it; ``limit`` is the change drawn at full colour
    (default: the map's largest absolute value)."""
    gray = np.asarray(patch, dtype=np.float64)
    if gray.ndim == 3:
        gray = gray.mean(axis=2)
    limit = limit or float(np.abs(heat).max()) or 1.0
    a = np.clip(heat / limit, -1, 1)[..., None]
    color = np.where(a > 0, np.array([230.0, 30.0, 30.0]), np.array([30.0, 60.0, 230.0]))
    alpha = 0.65 * np.abs(a)
    out = (np.repeat(gray[..., None], 3, axis=2) * (1 - alpha) + color * alpha).round().astype(np.uint8)
    return np.repeat(np.repeat(out, scale, axis=0), scale, axis=1) if scale > 1 else out
