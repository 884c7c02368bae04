"""Inspecting a large photo (the dent workflow): a grid of model-sized windows, their defect
scores as a heatmap, and the located defects after non-maximum suppression. Pure NumPy.

A window with top-left (x0, y0) covers columns x0 .. x0+size-1 and its center is
(x0 + size//2, y0 + size//2): the same convention as training patches cut around a marked
defect center (``defect_assets.ml.patches.crop_centered``), so a window centered on a defect
shows the model what a training patch showed it. An image smaller than one window is
reflect-padded to the window's size, as training patches are at the border.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowGrid:
    xs: np.ndarray  # left columns of the windows, one per grid column
    ys: np.ndarray  # top rows, one per grid row
    size: int
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    @property
    def count(self) -> int:
        return len(self.xs) * len(self.ys)

    @property
    def centers_x(self) -> np.ndarray:
        return self.xs + self.size // 2

    @property
    def centers_y(self) -> np.ndarray:
        return self.ys + self.size // 2


def _starts(n: int, size: int, stride: int) -> np.ndarray:
    if n <= size:
        return np.zeros(1, np.int64)
    s = np.arange(0, n - size + 1, stride, dtype=np.int64)
    return s if s[-1] == n - size else np.append(s, n - size)  # the last window touches the border


def window_grid(width: int, height: int, size: int, stride: int) -> WindowGrid:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return WindowGrid(_starts(width, size, stride), _starts(height, size, stride), size, width, height)


def padded_to_window(pixels: np.ndarray, size: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if h >= size and w >= size:
        return pixels
    pads = ((0, max(0, size - h)), (0, max(0, size - w))) + (((0, 0),) if pixels.ndim == 3 else ())
    mode = "reflect" if min(h, w) > 1 and size - min(h, w) < min(h, w) else "symmetric" if min(h, w) > 1 else "edge"
    return np.pad(pixels, pads, mode=mode)


def cut_windows(pixels: np.ndarray, grid: WindowGrid, flat: np.ndarray) -> np.ndarray:
    """The windows with flat grid indices ``flat`` (row-major), as (k, size, size[, C]) uint8."""
    img = padded_to_window(pixels, grid.size)
    view = np.lib.stride_tricks.sliding_window_view(img, (grid.size, grid.size), axis=(0, 1))
    rows, cols = np.divmod(np.asarray(flat), len(grid.xs))
    out = view[grid.ys[rows], grid.xs[cols]]  # (k, [C,] size, size): a copy
    return np.moveaxis(out, 1, -1) if img.ndim == 3 else out


def _bilinear_axis(n_out: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel: the grid index to its left and the weight of the one to its right."""
    if len(centers) == 1:
        return np.zeros(n_out, np.int64), np.zeros(n_out, np.float32)
    f = np.interp(np.arange(n_out), centers, np.arange(len(centers)))
    i0 = np.minimum(np.floor(f).astype(np.int64), len(centers) - 2)
    return i0, (f - i0).astype(np.float32)


def heatmap(scores: np.ndarray, grid: WindowGrid, scale: int = 1) -> np.ndarray:
    """Scores (grid rows x grid columns) -> uint8 image of the photo's size divided by ``scale``
    (255 = probability 1), bilinear between window centers, constant beyond the outermost ones."""
    s = np.asarray(scores, np.float32).reshape(grid.shape)
    width, height = -(-grid.width // scale), -(-grid.height // scale)
    ix, wx = _bilinear_axis(width, (grid.centers_x + 0.5) / scale - 0.5)
    iy, wy = _bilinear_axis(height, (grid.centers_y + 0.5) / scale - 0.5)
    jx, jy = np.minimum(ix + 1, s.shape[1] - 1), np.minimum(iy + 1, s.shape[0] - 1)
    rows = s[:, ix] * (1 - wx) + s[:, jx] * wx  # (grid rows, width)
    full = rows[iy] * (1 - wy)[:, None] + rows[jy] * wy[:, None]
    return np.clip(np.rint(full * 255), 0, 255).astype(np.uint8)


def locate(scores: np.ndarray, grid: WindowGrid, threshold: float, min_distance: float) -> list[dict]:
    """Defects: windows scoring >= threshold, strongest first, none closer than min_distance
    (pixels, between centers) to a stronger one. Each location is refined to the score-weighted
    center of the 3x3 windows around the peak."""
    s = np.asarray(scores, np.float64).reshape(grid.shape)
    cx, cy = grid.centers_x.astype(np.float64), grid.centers_y.astype(np.float64)
    flat = np.flatnonzero(s.ravel() >= threshold)
    order = flat[np.argsort(-s.ravel()[flat], kind="stable")]
    kept: list[dict] = []
    for f in order:
        r, c = divmod(int(f), s.shape[1])
        if any((cx[c] - k["_cx"]) ** 2 + (cy[r] - k["_cy"]) ** 2 < min_distance ** 2 for k in kept):
            continue
        r0, r1, c0, c1 = max(r - 1, 0), min(r + 2, s.shape[0]), max(c - 1, 0), min(c + 2, s.shape[1])
        w = s[r0:r1, c0:c1]
        total = float(w.sum())
        x = float((w.sum(axis=0) * cx[c0:c1]).sum() / total) if total > 0 else cx[c]
        y = float((w.sum(axis=1) * cy[r0:r1]).sum() / total) if total > 0 else cy[r]
        kept.append({"x": round(x, 1), "y": round(y, 1), "score": float(s[r, c]), "_cx": cx[c], "_cy": cy[r],
                     "window": int(f)})
    return [{k: v for k, v in d.items() if not k.startswith("_")} for d in kept]
