"""SYNTHETIC DATA: generated "surface photos" with dents and scratches, for demos and tests.

Nothing in this module comes from a camera. It draws a plausible brushed-metal / painted
surface (a smooth low-frequency lighting gradient plus fine anisotropic "brushed" grain) and
adds defects at known centers, so the point-annotation workflow (mark defect centers on large
photos, cut 64x64 patches around them, train a classifier) can be exercised end to end without
real data. Do not report accuracy measured on these images as if it were accuracy on real parts.

- ``make_surface_scene`` returns one image (uint8 HxW, or HxWx3 with ``color=True``) and its
  defects (center x = column, y = row, kind ``"dent"`` or ``"scratch"``).
- ``write_synthetic_surfaces`` writes a folder of PNGs, a ``points.csv`` (``image,x,y,label``)
  and a ``SYNTHETIC.txt`` marker; byte-identical output for a given seed.

Defects:
- dent: a radial depression of radius 10-24 px, shaded like a bump lit from one side (a dark
  side and a bright side, peak-to-peak contrast roughly 60-100 gray levels), zero outside its
  radius;
- scratch: a thin (1-3 px) bright or dark line segment 25-60 px long at a random angle with a
  faint roughened halo; its midpoint is the defect center.

All random draws for the background happen before any defect draw, and their number depends
only on the image size, so ``make_surface_scene(np.random.default_rng(s), defects=0)`` renders
exactly the background of ``make_surface_scene(np.random.default_rng(s), defects=3)`` (same
size). ``color`` does not change the draws either: the gray scene is the luminance of the color
scene up to rounding. Pure NumPy + Pillow; no Dagster import.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "DEFECT_KINDS",
    "SyntheticDefect",
    "make_surface_scene",
    "write_synthetic_surfaces",
    "POINTS_FILENAME",
    "MARKER_FILENAME",
]

DEFECT_KINDS = ("dent", "scratch")
POINTS_FILENAME = "points.csv"
MARKER_FILENAME = "SYNTHETIC.txt"
IMAGE_PATTERN = "synthetic_surface_{:04d}.png"
_IMAGE_RE = re.compile(r"^synthetic_surface_(\d{4,})\.png$")

# Defect geometry (pixels) and contrast (gray levels).
DENT_RADIUS = (10.0, 24.0)
DENT_AMPLITUDE = (34.0, 50.0)
SCRATCH_LENGTH = (25.0, 60.0)
SCRATCH_WIDTH = (1.0, 3.0)
SCRATCH_AMPLITUDE = (60.0, 90.0)

# Candidate positions are drawn in batches; this many batches per defect before giving up.
_BATCH = 256
_BATCHES_PER_DEFECT = 8

# Surface tints for color=True (per-channel gains applied to the luminance).
_TINTS = np.array(
    [
        [1.00, 1.00, 1.00],  # bare steel
        [0.90, 0.98, 1.10],  # blue-gray paint
        [0.94, 1.05, 0.94],  # green-gray paint
        [1.10, 0.99, 0.86],  # warm primer / brass
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SyntheticDefect:
    x: int  # center column in pixels
    y: int  # center row
    kind: str  # "dent" or "scratch"


@dataclass(frozen=True)
class _Spec:
    """One defect's shape parameters, drawn before its position."""

    kind: str
    ext_x: int  # half extent along x (pixels)
    ext_y: int  # half extent along y
    params: tuple[float, ...]


# --------------------------------------------------------------------------- background


def _box_blur_1d(noise: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Moving average of ``length`` samples along ``axis`` ('valid' part: the axis shrinks by length - 1)."""
    c = np.cumsum(noise, axis=axis, dtype=np.float32)
    c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
    n = c.shape[axis]
    hi = np.take(c, np.arange(length, n), axis=axis)
    lo = np.take(c, np.arange(0, n - length), axis=axis)
    return (hi - lo) / np.float32(length)


def _smooth_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-frequency field (unit-ish amplitude): a coarse random grid upsampled bicubically."""
    coarse = rng.standard_normal((3, 4)).astype(np.float32)
    img = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _render_background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Luminance (float32 HxW) of a defect-free surface, and the color tint (3 gains).

    The number of random draws depends only on (width, height).
    """
    base = rng.uniform(122.0, 148.0)
    # Linear lighting gradient in a random direction, total swing 8-22 gray levels.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    swing = rng.uniform(8.0, 22.0)
    blob_amp = rng.uniform(2.0, 6.0)
    grain_amp = rng.uniform(3.0, 5.5)
    streak_amp = rng.uniform(0.8, 2.0)
    sensor_amp = rng.uniform(0.8, 1.6)
    brush_len = int(rng.integers(32, 129))
    vertical = bool(rng.integers(0, 2))
    tint = _TINTS[int(rng.integers(0, len(_TINTS)))] * rng.uniform(0.97, 1.03, size=3).astype(np.float32)

    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    span = max(width, height)
    proj = (xs * (width / span) * math.cos(angle) + ys * (height / span) * math.sin(angle))
    lum = np.float32(base) + np.float32(swing) * proj
    lum = lum + np.float32(blob_amp) * _smooth_field(rng, width, height)

    # Brushed grain: white noise averaged over brush_len pixels along the brushing direction,
    # lightly smoothed across it, normalized to unit std.
    if vertical:
        noise = rng.standard_normal((height + brush_len - 1, width), dtype=np.float32)
        grain = _box_blur_1d(noise, brush_len, axis=0)
        grain[:, 1:-1] = 0.25 * grain[:, :-2] + 0.5 * grain[:, 1:-1] + 0.25 * grain[:, 2:]
        streaks = rng.standard_normal(width, dtype=np.float32)[None, :]
    else:
        noise = rng.standard_normal((height, width + brush_len - 1), dtype=np.float32)
        grain = _box_blur_1d(noise, brush_len, axis=1)
        grain[1:-1, :] = 0.25 * grain[:-2, :] + 0.5 * grain[1:-1, :] + 0.25 * grain[2:, :]
        streaks = rng.standard_normal(height, dtype=np.float32)[:, None]
    grain *= np.float32(1.0 / max(float(grain.std()), 1e-6))
    lum = lum + np.float32(grain_amp) * grain + np.float32(streak_amp) * streaks
    lum = lum + np.float32(sensor_amp) * rng.standard_normal((height, width), dtype=np.float32)
    return lum.astype(np.float32, copy=False), tint.astype(np.float32)


# --------------------------------------------------------------------------- defects


def _draw_spec(rng: np.random.Generator) -> _Spec:
    kind = DEFECT_KINDS[int(rng.integers(0, 2))]
    if kind == "dent":
        r = rng.uniform(*DENT_RADIUS)
        amp = rng.uniform(*DENT_AMPLITUDE)
        light = rng.uniform(0.0, 2.0 * math.pi)
        ext = int(math.ceil(r))
        return _Spec(kind, ext, ext, (r, amp, light))
    length = rng.uniform(*SCRATCH_LENGTH)
    width = rng.uniform(*SCRATCH_WIDTH)
    amp = rng.uniform(*SCRATCH_AMPLITUDE) * (1.0 if rng.random() < 0.5 else -1.0)
    theta = rng.uniform(0.0, math.pi)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    half = length / 2.0
    pad = width / 2.0 + 3.0  # antialiasing + halo
    ext_x = int(math.ceil(half * abs(math.cos(theta)) + pad))
    ext_y = int(math.ceil(half * abs(math.sin(theta)) + pad))
    return _Spec(kind, ext_x, ext_y, (half, width, amp, theta, phase))


def _place(rng: np.random.Generator, specs: list[_Spec], width: int, height: int,
           min_separation: int, margin: int) -> list[tuple[int, int]]:
    """Rejection-sample integer centers: inside the margin and >= min_separation apart."""
    centers: list[tuple[int, int]] = []
    for i, s in enumerate(specs):
        x_lo, x_hi = margin + s.ext_x, width - 1 - margin - s.ext_x
        y_lo, y_hi = margin + s.ext_y, height - 1 - margin - s.ext_y
        if x_lo > x_hi or y_lo > y_hi:
            raise ValueError(
                f"a {width}x{height} image is too small for a {s.kind} of half extent "
                f"{s.ext_x}x{s.ext_y} px with a {margin} px margin; enlarge the image or lower margin"
            )
        placed = None
        for _ in range(_BATCHES_PER_DEFECT):
            cx = rng.integers(x_lo, x_hi + 1, size=_BATCH)
            cy = rng.integers(y_lo, y_hi + 1, size=_BATCH)
            if centers:
                prev = np.asarray(centers, dtype=np.float64)
                d2 = (cx[:, None] - prev[None, :, 0]) ** 2 + (cy[:, None] - prev[None, :, 1]) ** 2
                ok = np.all(d2 >= float(min_separation) ** 2, axis=1)
            else:
                ok = np.ones(_BATCH, dtype=bool)
            hits = np.flatnonzero(ok)
            if hits.size:
                j = int(hits[0])
                placed = (int(cx[j]), int(cy[j]))
                break
        if placed is None:
            raise ValueError(
                f"could not place {len(specs)} defects at least {min_separation} px apart with a "
                f"{margin} px margin in a {width}x{height} image (placed {i} after "
                f"{_BATCH * _BATCHES_PER_DEFECT} tries for the next one); lower defects or "
                f"min_separation, or enlarge the image"
            )
        centers.append(placed)
    return centers


def _window(cx: int, cy: int, ext_x: int, ext_y: int, width: int, height: int):
    x0, x1 = max(cx - ext_x, 0), min(cx + ext_x + 1, width)
    y0, y1 = max(cy - ext_y, 0), min(cy + ext_y + 1, height)
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    return (slice(y0, y1), slice(x0, x1)), dx, dy


def _add_dent(lum: np.ndarray, cx: int, cy: int, s: _Spec) -> None:
    """Depression h = -(1 - (d/r)^2)^2 inside r, shaded by its slope toward a light direction,
    plus some ambient darkening at the bottom. Exactly zero outside the radius."""
    r, amp, light = s.params
    sl, dx, dy = _window(cx, cy, s.ext_x, s.ext_y, lum.shape[1], lum.shape[0])
    q = (dx * dx + dy * dy) / np.float32(r * r)
    inside = q < 1.0
    one_minus = np.where(inside, 1.0 - q, 0.0).astype(np.float32)
    # grad h = 4 (1 - q) * (dx, dy) / r^2; |grad h| peaks at d = r/sqrt(3) with 8 / (3 sqrt(3) r).
    slope = 4.0 * one_minus * (dx * math.cos(light) + dy * math.sin(light)) / np.float32(r * r)
    slope *= np.float32(3.0 * math.sqrt(3.0) * r / 8.0)  # -> [-1, 1]
    shade = np.float32(amp) * slope - np.float32(0.3 * amp) * one_minus * one_minus
    lum[sl] += shade


def _add_scratch(lum: np.ndarray, cx: int, cy: int, s: _Spec) -> None:
    """Antialiased line segment (capsule) with a faint halo and slight brightness variation."""
    half, width, amp, theta, phase = s.params
    sl, dx, dy = _window(cx, cy, s.ext_x, s.ext_y, lum.shape[1], lum.shape[0])
    ux, uy = math.cos(theta), math.sin(theta)
    t = dx * np.float32(ux) + dy * np.float32(uy)
    tc = np.clip(t, -half, half)
    dist = np.hypot(dx - tc * np.float32(ux), dy - tc * np.float32(uy))
    core = np.clip(np.float32(width / 2.0 + 0.5) - dist, 0.0, 1.0)
    halo = np.float32(0.22) * np.exp(-(dist * dist) / np.float32(2.0 * (width + 1.0) ** 2))
    along = np.float32(0.85) + np.float32(0.15) * np.sin(np.float32(phase) + tc * np.float32(0.15))
    lum[sl] += np.float32(amp) * along * np.maximum(core, halo)


# --------------------------------------------------------------------------- public API


def make_surface_scene(rng: np.random.Generator, width: int = 512, height: int = 384,
                       defects: int = 3, color: bool = False,
                       min_separation: int = 80, margin: int = 8) -> tuple[np.ndarray, list[SyntheticDefect]]:
    """Returns (image uint8 HxW, or HxWx3 if color, list of defects).

    SYNTHETIC: a generated surface, not a photograph. Each defect center lies at least
    ``margin`` px plus the defect's half extent from every border, and centers are at least
    ``min_separation`` px apart (Euclidean). Raises ValueError if the defects cannot be placed.
    The same generator state and size always give the same background whatever ``defects``
    and ``color`` are (see the module docstring).
    """
    width, height, defects = int(width), int(height), int(defects)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    if defects < 0:
        raise ValueError(f"defects must be >= 0, got {defects}")
    if min_separation < 0 or margin < 0:
        raise ValueError(f"min_separation and margin must be >= 0, got {min_separation} and {margin}")

    lum, tint = _render_background(rng, width, height)
    specs = [_draw_spec(rng) for _ in range(defects)]
    centers = _place(rng, specs, width, height, int(min_separation), int(margin))
    out: list[SyntheticDefect] = []
    for s, (cx, cy) in zip(specs, centers):
        (_add_dent if s.kind == "dent" else _add_scratch)(lum, cx, cy, s)
        out.append(SyntheticDefect(x=cx, y=cy, kind=s.kind))

    if color:
        # Normalize the gains to unit luminance (ITU-R BT.601 weights, as Pillow's "L").
        tint = tint / np.float32(0.299 * tint[0] + 0.587 * tint[1] + 0.114 * tint[2])
        img = lum[:, :, None] * tint[None, None, :]
    else:
        img = lum
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), out


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # compress_level=3: 4x faster than 6, ~13% larger
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def write_synthetic_surfaces(folder: str | os.PathLike, n_images: int = 8, seed: int = 0,
                             width: int = 512, height: int = 384,
                             defects_per_image: tuple[int, int] = (1, 4), color: bool = False,
                             clean_images: int = 0) -> Path:
    """Writes synthetic_surface_0000.png ... into folder plus points.csv (header: image,x,y,label;
    one row per defect, label = kind) and a SYNTHETIC.txt saying the data is generated. `clean_images`
    extra images have no defect (they appear in no points.csv row). Returns the points.csv path.
    Deterministic for a seed (byte-identical files).

    Images 0 .. n_images-1 carry ``defects_per_image`` = (low, high) defects each (both ends
    inclusive); images n_images .. n_images+clean_images-1 are the clean ones. Image ``i`` is
    drawn from its own generator (``SeedSequence(seed).spawn``), so it does not depend on how
    many images follow it. Older ``synthetic_surface_NNNN.png`` files in ``folder`` beyond this
    run's count are deleted, so that a stale defect image cannot pose as a clean one; other
    files are left alone.
    """
    n_images, clean_images = int(n_images), int(clean_images)
    lo, hi = (int(v) for v in defects_per_image)
    if n_images < 0 or clean_images < 0:
        raise ValueError(f"n_images and clean_images must be >= 0, got {n_images} and {clean_images}")
    if not 0 <= lo <= hi:
        raise ValueError(f"defects_per_image must be (low, high) with 0 <= low <= high, got {defects_per_image!r}")

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    total = n_images + clean_images
    children = np.random.SeedSequence(int(seed)).spawn(total)

    rows: list[tuple[str, int, int, str]] = []
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        k = int(rng.integers(lo, hi + 1)) if i < n_images else 0
        img, found = make_surface_scene(rng, width=width, height=height, defects=k, color=color)
        name = IMAGE_PATTERN.format(i)
        (root / name).write_bytes(_png_bytes(img))
        rows.extend((name, d.x, d.y, d.kind) for d in found)

    for p in root.iterdir():
        m = _IMAGE_RE.match(p.name)
        if m and int(m.group(1)) >= total and p.is_file():
            p.unlink()

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "x", "y", "label"])
    writer.writerows(rows)
    points = root / POINTS_FILENAME
    points.write_bytes(buf.getvalue().encode("utf-8"))

    counts = {k: sum(1 for r in rows if r[3] == k) for k in DEFECT_KINDS}
    marker = (
        "SYNTHETIC DATA - these images are generated, not photographs of real parts.\n"
        "Made by defect_assets.ml.synthetic.write_synthetic_surfaces for demos and tests of the\n"
        "point-annotation workflow. Do not report results on them as results on real data.\n"
        "\n"
        f"seed: {int(seed)}\n"
        f"size: {width}x{height} {'RGB' if color else 'grayscale'}\n"
        f"images with defects: {n_images} (synthetic_surface_0000.png onward, "
        f"{lo}-{hi} defects each)\n"
        f"clean images: {clean_images} (the last ones; no row in {POINTS_FILENAME})\n"
        f"defects: {len(rows)} ({', '.join(f'{v} {k}' for k, v in counts.items())})\n"
        f"labels: {POINTS_FILENAME} (image,x,y,label; x = column, y = row, label = dent|scratch)\n"
    )
    (root / MARKER_FILENAME).write_bytes(marker.encode("utf-8"))
    return points
