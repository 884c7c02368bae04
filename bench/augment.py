"""Benchmark: the 48x augmentation of every ELPV train patch, measured side by side with the
tutorial's naive per-image Pillow loop and with a plain NumPy copy of the same output bytes
(the memory-bandwidth floor). Prints ratios; targets: >= 20x the naive loop, within 3x of the copy.

    .venv/bin/python bench/augment.py [--size 64] [--repeats 3]

All three write into preallocated, already-touched output buffers, so page faults of a fresh
350 MB allocation (which dominate a cold run) are excluded from every side alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from defect_assets.datasets.elpv import elpv_labels, elpv_root  # noqa: E402
from defect_assets.ml.augment import ANGLES, augment_48  # noqa: E402
from defect_assets.ml.images import decode_image, sha256_bytes  # noqa: E402
from defect_assets.ml.patches import PatchSpec, center_crop, cut_image_patches  # noqa: E402
from defect_assets.ml.splits import assign_split  # noqa: E402


def train_contexts(size: int) -> np.ndarray:
    root, ctx = elpv_root(), []
    for rel in elpv_labels()["path"]:
        data = (root / rel).read_bytes()
        if assign_split(sha256_bytes(data)) == "train":
            (cut,) = cut_image_patches(decode_image(data), [dict(kind="image", label="x")], PatchSpec(size=size), None)
            ctx.append(cut.context)
    return np.stack(ctx)


def naive_pillow(contexts: np.ndarray, size: int, out: np.ndarray) -> None:
    """The tutorial's way: per patch, per angle, Image.rotate, then transpose for the mirror."""
    for i, c in enumerate(contexts):
        img = Image.fromarray(c)
        for a, angle in enumerate(ANGLES):
            rot = img.rotate(angle, resample=Image.BILINEAR)
            out[i, 2 * a] = center_crop(np.asarray(rot), size)
            out[i, 2 * a + 1] = center_crop(np.asarray(rot.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), size)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    ctx = train_contexts(args.size)
    n_out = len(ctx) * 48
    out = np.ones((len(ctx), 48, args.size, args.size), np.uint8)
    ref = np.ones_like(out)
    naive_out = np.ones_like(out)
    print(f"ELPV train split: {len(ctx)} patches of {args.size}x{args.size} -> {n_out:,} augmented "
          f"({out.nbytes / 1e6:.0f} MB); {os.cpu_count()} cores")
    t_fast = best_of(lambda: augment_48(ctx, args.size, out=out), args.repeats)
    t_fast1 = best_of(lambda: augment_48(ctx, args.size, out=out, workers=1), args.repeats)
    t_copy = best_of(lambda: np.copyto(ref, out), args.repeats)
    t_naive = best_of(lambda: naive_pillow(ctx, args.size, naive_out), 1)
    diff = np.abs(naive_out.astype(np.int16) - out.astype(np.int16))
    rate = lambda t: n_out / t  # noqa: E731
    print(f"{'method':<34}{'patches/s':>14}{'seconds':>10}")
    for name, t in [("defect_assets augment_48 (threads)", t_fast), ("defect_assets augment_48 (1 thread)", t_fast1),
                    ("naive Pillow loop", t_naive), ("NumPy copy of the same bytes", t_copy)]:
        print(f"{name:<34}{rate(t):>14,.0f}{t:>10.3f}")
    print(f"speed-up over the naive loop: {t_naive / t_fast:.1f}x   (target >= 20x)")
    print(f"time / copy time:             {t_fast / t_copy:.1f}x   (target <= 3x)")
    print(f"same pictures as Pillow: mean |diff| {diff.mean():.3f} gray levels, max {diff.max()}")


if __name__ == "__main__":
    main()
