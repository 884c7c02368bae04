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


def _upsample(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """(gh, gw) -> (h, w): each cell's value spread smoothly over the pixels it covers (bilinear
    between cell centers, 'same'-padding geometry: cell i covers pixels i*h/gh .. (i+1)*h/gh)."""
    gh, gw = a.shape
    ys = (np.arange(h) + 0.5) * gh / h - 0.5
    xs = (np.arange(w) + 0.5) * gw / w - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 1)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None]
    wx = np.clip(xs - x0, 0, 1)[None, :]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def linear_stage_map(maps_model, linear, patch: np.ndarray, classes: list[str]) -> np.ndarray:
    """(H, W) share of a linear head's defect logit at each location of ``patch`` (H, W, C), for
    features that are the mean- then max-pooled channels of each stage map (``ml.backbone``'s
    order). Exact: the map sums to the defect logit (the head's constant, its intercept and the
    standardization offsets, shared evenly by the pixels), each stage's cells spread over the
    pixels they cover."""
    from defect_assets.ml.backbone import is_onnx

    if is_onnx(maps_model):
        maps = maps_model(np.asarray(patch)[None])
    else:
        import tensorflow as tf

        maps = maps_model(tf.cast(np.asarray(patch)[None], tf.float32), training=False)
    maps = [np.asarray(m)[0] for m in (maps if isinstance(maps, (list, tuple)) else [maps])]
    coef = np.asarray(linear.coef, np.float64)
    row = coef[0] if coef.shape[0] == 1 else coef[-1] - coef[0]  # binary: the defect logit
    w = row / np.asarray(linear.scale, np.float64)
    intercept = np.asarray(linear.intercept, np.float64)
    constant = (intercept[0] if coef.shape[0] == 1 else intercept[-1] - intercept[0]) - float(w @ linear.mean)
    h, wd = patch.shape[:2]
    heat = np.zeros((h, wd))
    at = 0
    for m in maps:
        gh, gw, c = m.shape
        w_mean, w_max = w[at:at + c], w[at + c:at + 2 * c]
        at += 2 * c
        cells = (m.astype(np.float64) @ w_mean) / (gh * gw)
        flat = m.reshape(-1, c)
        arg = flat.argmax(axis=0)
        np.add.at(cells.reshape(-1), arg, w_max * flat[arg, np.arange(c)])
        # spread each cell's share over its pixels (so the map sums to the same logit)
        heat += _upsample(cells, h, wd) * (gh * gw) / (h * wd)
    if at != len(w):
        raise ValueError(f"the head has {len(w)} weights but the stage maps give {at} features")
    return heat + constant / (h * wd)
