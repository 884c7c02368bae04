"""SYNTHETIC DATA: solar-cell-like electroluminescence images with thin cracks, for tests.

Nothing here comes from a camera. Each cell is ``size`` x ``size`` gray (300 px, as ELPV):
a blotchy low-frequency brightness field (uneven emission), two dark horizontal busbars, fine
vertical finger lines, pixel grain, dark "dislocation" blotches and soft dark streaks (5-8 px
wide, the shape a crack takes once shrunk), all present in every cell whatever its label. A
cracked cell also carries one or two sharp 1-2 px dark polyline cracks at random angles.
Cracks are what ELPV's raters mark and what a 4.7x area downscale to 64 px averages away: the
point of this set is a small, fast proof that a model seeing the cell at its native resolution
finds them while the 64 px path cannot.

``write_crack_cells`` writes a batch folder (PNGs + ``labels.csv`` with ``image,label`` where
label is ``crack`` or ``ok``) and a ``SYNTHETIC.txt`` marker; byte-identical for a seed.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [-1, 1]: a coarse grid of noise, bicubically enlarged."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    field = np.asarray(img, np.float32)
    return field / max(float(np.abs(field).max()), 1e-6)


def _polyline(rng: np.random.Generator, size: int, length: float) -> np.ndarray:
    """Points of a random, slightly wandering line of about ``length`` px inside the cell."""
    x, y = rng.uniform(0.15 * size, 0.85 * size, 2)
    angle = rng.uniform(0, np.pi)
    pts, step = [(x, y)], 1.0
    for _ in range(int(length)):
        angle += rng.normal(0, 0.04)
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
        if not (2 <= x < size - 2 and 2 <= y < size - 2):
            break
        pts.append((x, y))
    return np.asarray(pts)


def _draw_crack(lum: np.ndarray, pts: np.ndarray, width: int, depth: float) -> np.ndarray:
    """Darken the pixels within width/2 of the polyline (a thin, sharp line); returns their mask."""
    h, w = lum.shape
    mask = np.zeros_like(lum, dtype=bool)
    r = max(width - 1, 0)
    for x, y in pts:
        xi, yi = int(round(x)), int(round(y))
        y0, y1 = max(yi - r // 2, 0), min(yi + (r + 1) // 2 + 1, h)
        mask[y0:y1, max(xi - r // 2, 0):min(xi + (r + 1) // 2 + 1, w)] = True
    lum[mask] -= depth
    return mask


def make_crack_cell(rng: np.random.Generator, size: int = 300, cracked: bool = False,
                    with_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One uint8 cell (and, with ``with_mask``, the boolean mask of its crack pixels). The draws
    for the background do not depend on ``cracked``."""
    lum = 150 + 28 * _smooth(rng, size, 5) + 14 * _smooth(rng, size, 11)
    lum += rng.normal(0, 7, (size, size)).astype(np.float32)  # grain
    xs = np.arange(size)
    fingers = (xs % 6 == 0).astype(np.float32)  # fine vertical finger lines, every 6 px
    lum -= 10 * fingers[None, :]
    for y0 in (int(size * 0.31), int(size * 0.69)):  # two busbars
        lum[y0 - 3:y0 + 3, :] -= 45
    for _ in range(rng.integers(2, 6)):  # dislocation blotches, in every cell
        cx, cy = rng.uniform(0, size, 2)
        rad = rng.uniform(6, 22)
        yy, xx = np.ogrid[:size, :size]
        lum -= rng.uniform(15, 35) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad ** 2))
    # soft streaks in every cell: at 64 px they look like a shrunk crack, at full size they have no edge
    streaks = np.zeros_like(lum)
    for _ in range(int(rng.integers(1, 6))):
        _draw_crack(streaks, _polyline(rng, size, rng.uniform(60, 180)), 1, -rng.uniform(70, 110))
    from scipy.ndimage import gaussian_filter

    lum -= gaussian_filter(streaks, sigma=2.5)
    crack_draws = [(_polyline(rng, size, rng.uniform(60, 180)), int(rng.integers(1, 3)), rng.uniform(20, 30))
                   for _ in range(int(rng.integers(1, 3)))]
    mask = np.zeros(lum.shape, bool)
    if cracked:
        for pts, width, depth in crack_draws:
            mask |= _draw_crack(lum, pts, width, depth)
    cell = np.clip(np.rint(lum), 0, 255).astype(np.uint8)
    return (cell, mask) if with_mask else cell


def crack_mask(seed: int, index: int, size: int = 300) -> np.ndarray:
    """The crack pixels of cell ``index`` of ``write_crack_cells(seed=seed)`` (all False for a
    sound cell): where a heatmap should point."""
    cracked = bool(np.random.default_rng(seed).random(index + 1)[index] < 0.5)
    return make_crack_cell(np.random.default_rng([seed, index]), size, cracked, with_mask=True)[1]


def write_crack_cells(folder: str | os.PathLike, n_cells: int = 120, seed: int = 0, size: int = 300,
                      crack_fraction: float = 0.5) -> Path:
    """A batch folder of SYNTHETIC cells and their labels.csv; returns the labels path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cells):
        cracked = bool(rng.random() < crack_fraction)
        cell = make_crack_cell(np.random.default_rng([seed, i]), size, cracked)
        name = f"cell{i:04d}.png"
        buf = io.BytesIO()
        Image.fromarray(cell).save(buf, format="PNG", compress_level=3)
        (folder / name).write_bytes(buf.getvalue())
        rows.append((name, "crack" if cracked else "ok"))
    path = folder / "labels.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    (folder / "SYNTHETIC.txt").write_text("Generated cells with thin cracks (defect_assets.ml.synthetic_cracks); "
                                          "not real electroluminescence images.\n")
    return path
