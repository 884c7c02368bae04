"""The 48x training augmentation (24 rotations every 15 degrees x {original, mirror}) and the
optional random affine variants (shift, log-uniform scale, shear, stretch, flips).

Speed comes from geometry, not from a faster loop: only the six base angles 0..75 degrees are
resampled (bilinear, 8-bit fixed point, one vectorized gather per corner); the other 42 outputs
are exact 90-degree turns and mirrors of those, i.e. memory copies. Sampling happens inside each
patch's larger context window (see patches.context_size), so rotated corners are real pixels.

Convention: angle a rotates counter-clockwise as displayed (like PIL.Image.rotate(a)) about the
patch center; output j of a patch is angle 15*(j // 2), mirrored (left-right, after rotating)
when j is odd.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

ANGLES = tuple(range(0, 360, 15))
N_VARIANTS = 2 * len(ANGLES)  # 48
_BASE = 6  # 0, 15, ..., 75 degrees; the rest are quarter turns of these


def _bilinear_plan(out_size: int, ctx_size: int, angle_deg: float):
    """Flat corner indices (4, P) and 8-bit weights (4, P) that rotate the context about its
    center and sample the central out_size x out_size window."""
    t = math.radians(angle_deg)
    c_out = (out_size - 1) / 2
    c_in = (ctx_size - 1) / 2
    r, c = np.mgrid[0:out_size, 0:out_size].astype(np.float64)
    dx, dy = c - c_out, r - c_out
    sx = c_in + dx * math.cos(t) - dy * math.sin(t)
    sy = c_in + dx * math.sin(t) + dy * math.cos(t)
    return _corner_plan(sx.ravel(), sy.ravel(), ctx_size)


def _corner_plan(sx: np.ndarray, sy: np.ndarray, ctx_size: int):
    # Round coordinates to 1/256 px first so exact-integer positions stay exact.
    sx = np.clip(np.round(sx * 256) / 256, 0, ctx_size - 1)
    sy = np.clip(np.round(sy * 256) / 256, 0, ctx_size - 1)
    x0 = np.minimum(np.floor(sx).astype(np.int64), ctx_size - 2)
    y0 = np.minimum(np.floor(sy).astype(np.int64), ctx_size - 2)
    fx = np.round((sx - x0) * 256).astype(np.uint16)
    fy = np.round((sy - y0) * 256).astype(np.uint16)
    # Weights in 1/65536; split into 1/256 x 1/256 so uint16 products never overflow below.
    idx = np.stack([y0 * ctx_size + x0, y0 * ctx_size + x0 + 1, (y0 + 1) * ctx_size + x0, (y0 + 1) * ctx_size + x0 + 1])
    wx = np.stack([256 - fx, fx, 256 - fx, fx]).astype(np.uint32)
    wy = np.stack([256 - fy, 256 - fy, fy, fy]).astype(np.uint32)
    w = (wx * wy + 128) >> 8  # 1/256 units, sums to ~256
    w[0] += 256 - w.sum(axis=0)  # exact sum so flat areas stay flat
    return idx, w.astype(np.uint16)


def _apply_plan(flat: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """flat: (N, S*S[, C]) uint8 -> (N, P[, C]) uint8, C-contiguous."""
    wk = (lambda k: w[k][:, None]) if flat.ndim == 3 else (lambda k: w[k])  # noqa: E731
    acc = np.multiply(flat.take(idx[0], axis=1), wk(0), dtype=np.uint16)
    for k in range(1, 4):
        acc += np.multiply(flat.take(idx[k], axis=1), wk(k), dtype=np.uint16)
    acc += 128
    acc >>= 8
    return acc.astype(np.uint8)


def rotate_contexts(contexts: np.ndarray, out_size: int, angle_deg: float) -> np.ndarray:
    """Rotate each context (N, S, S[, C]) by angle_deg and return the central out_size window."""
    n, s = contexts.shape[0], contexts.shape[1]
    flat = contexts.reshape(n, s * s, *contexts.shape[3:])
    idx, w = _bilinear_plan(out_size, s, angle_deg)
    return _apply_plan(flat, idx, w).reshape(n, out_size, out_size, *contexts.shape[3:])


def augment_48(contexts: np.ndarray, out_size: int, chunk: int = 128, out: np.ndarray | None = None,
               workers: int | None = None) -> np.ndarray:
    """(N, S, S[, C]) uint8 contexts -> (N, 48, out, out[, C]) uint8 augmented patches
    (written into ``out`` when given, e.g. a memory-mapped file). NumPy releases the GIL in
    its gathers and copies, so chunks run on ``workers`` threads (default: every core)."""
    if contexts.dtype != np.uint8:
        raise TypeError(f"contexts must be uint8, not {contexts.dtype}")
    n, s = contexts.shape[0], contexts.shape[1]
    if s < out_size * math.sqrt(2):
        raise ValueError(f"context {s} px is too small to rotate a {out_size} px patch without empty corners")
    tail = contexts.shape[3:]
    shape = (n, len(ANGLES), 2, out_size, out_size, *tail)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    else:
        out = out.reshape(shape)
    plans = [_bilinear_plan(out_size, s, 15 * b) for b in range(_BASE)]
    # Left-right mirrors of 8-pixel-aligned grayscale rows are done as reversed 64-bit words
    # with their bytes swapped: 8x fewer element moves than a uint8 reversal.
    words = not tail and out_size % 8 == 0
    view = (lambda a: a.view(np.uint64)) if words else (lambda a: a)  # noqa: E731

    def put(dst, src, mirror):
        if not mirror:
            np.copyto(dst, src)
        elif words:
            np.copyto(dst, src[:, :, ::-1])
            dst.byteswap(inplace=True)
        else:
            np.copyto(dst, src[:, :, ::-1])

    ov = view(out)

    def run_chunk(lo: int) -> None:
        flat = np.ascontiguousarray(contexts[lo:lo + chunk]).reshape(-1, s * s, *tail)
        blk = ov[lo:lo + chunk]
        for b, (idx, w) in enumerate(plans):
            base = _apply_plan(flat, idx, w).reshape(-1, out_size, out_size, *tail)
            # One transpose per base angle; every quarter turn and mirror is a flip of
            # either the base or its transpose (rot90 = T flipped up-down, rot270 = T mirrored).
            tr = np.ascontiguousarray(np.swapaxes(base, 1, 2))
            b_v, t_v = view(base), view(tr)
            for a, src, m_src in ((b, b_v, False), (b + 6, t_v[:, ::-1], False),
                                  (b + 12, b_v[:, ::-1], True), (b + 18, t_v, True)):
                # m_src: src is already the mirror of this angle's image
                put(blk[:, a, 1 if m_src else 0], src, False)
                put(blk[:, a, 0 if m_src else 1], src, True)

    workers = workers or os.cpu_count() or 1
    starts = range(0, n, chunk)
    if workers > 1 and n > chunk:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run_chunk, starts))
    else:
        for lo in starts:
            run_chunk(lo)
    return out.reshape(n, N_VARIANTS, out_size, out_size, *tail)


def variant_table(n_patches: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source patch index, angle, mirrored) for the rows of augment_48(...).reshape(-1, ...)."""
    j = np.tile(np.arange(N_VARIANTS), n_patches)
    return np.repeat(np.arange(n_patches), N_VARIANTS), 15 * (j // 2), (j % 2).astype(bool)


@dataclass(frozen=True)
class RandomAffine:
    """Ranges of the optional random variants (the Azure dent tutorial's augmentations)."""

    max_shift: float = 10.0  # pixels
    scale: tuple[float, float] = (1 / 1.6, 1.6)  # log-uniform
    max_shear_deg: float = 20.0
    stretch: tuple[float, float] = (1 / 1.3, 1.3)  # log-uniform aspect change
    flips: bool = True
    rotate: bool = True


def random_affine_variants(contexts: np.ndarray, out_size: int, n_per_patch: int, rng: np.random.Generator,
                           ranges: RandomAffine = RandomAffine()) -> tuple[np.ndarray, np.ndarray]:
    """n_per_patch random affine views of each context (edges clamped where a zoom-out reaches
    past the context). Returns (images (N*n, out, out[, C]), source index (N*n,))."""
    n, s = contexts.shape[0], contexts.shape[1]
    tail = contexts.shape[3:]
    m = n * n_per_patch
    src = np.repeat(np.arange(n), n_per_patch)
    lg = lambda lo_hi: np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]), m))  # noqa: E731
    scale, stretch = lg(ranges.scale), lg(ranges.stretch)
    shear = np.radians(rng.uniform(-ranges.max_shear_deg, ranges.max_shear_deg, m))
    theta = rng.uniform(0, 2 * np.pi, m) if ranges.rotate else np.zeros(m)
    flip = rng.random(m) < 0.5 if ranges.flips else np.zeros(m, bool)
    shift = rng.uniform(-ranges.max_shift, ranges.max_shift, (m, 2))
    # Output -> input map: A = R(theta) @ Shear @ diag(sx, sy) / zoom
    sx, sy = stretch ** 0.5, stretch ** -0.5
    cos, sin = np.cos(theta), np.sin(theta)
    a11, a12 = cos * sx, (cos * np.tan(shear) - sin) * sy
    a21, a22 = sin * sx, (sin * np.tan(shear) + cos) * sy
    a11, a12, a21, a22 = (v / scale for v in (a11, a12, a21, a22))
    c_out, c_in = (out_size - 1) / 2, (s - 1) / 2
    r, c = np.mgrid[0:out_size, 0:out_size].astype(np.float64)
    dx, dy = (c - c_out).ravel(), (r - c_out).ravel()
    dx = np.where(flip[:, None], -dx[None], dx[None])
    xs = c_in + shift[:, :1] + a11[:, None] * dx + a12[:, None] * dy[None]
    ys = c_in + shift[:, 1:] + a21[:, None] * dx + a22[:, None] * dy[None]
    idx, w = _corner_plan(xs, ys, s)  # (4, m, P)
    flat = contexts.reshape(n, s * s, *tail)
    extra = (None,) * len(tail)
    acc = np.zeros((m, out_size * out_size, *tail), dtype=np.uint16)
    for k in range(4):
        acc += flat[src[:, None], idx[k]].astype(np.uint16) * w[k][(...,) + extra]
    acc += 128
    acc >>= 8
    return acc.astype(np.uint8).reshape(m, out_size, out_size, *tail), src
