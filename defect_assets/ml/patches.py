"""Cutting fixed-size labeled patches out of images.

- point / box labels: a positive patch centered on the defect (reflect-padded at the border, so
  the patch stays centered), plus random negative windows that overlap no defect;
- "no defect here" (a ``none`` row): random windows, all negative;
- image-level labels: the whole image resized to the patch size.

Every patch also keeps a larger square *context* (side ``context_size(size)``, same center) so
augmentation can rotate without inventing corners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from defect_assets.ml.preprocess import whole_image_patch

NEGATIVE_LABEL = "background"


def context_size(size: int) -> int:
    """Smallest side >= size*sqrt(2) + 2 with the same parity as size (so the patch sits
    exactly in the middle of its context)."""
    s = math.ceil(size * math.sqrt(2)) + 2
    return s + ((s - size) % 2)


@dataclass(frozen=True)
class PatchSpec:
    size: int = 64
    """Side of the windows cut around points and boxes (the dent tutorial's 64)."""
    color: str = "L"  # "L" grayscale or "RGB"
    negatives_per_positive: float = 1.0
    defect_radius: float | None = None  # half-side of the box around a point that negatives avoid; default size/2
    max_negative_tries: int = 200
    negatives_per_clean_image: int = 2
    """Negative windows cut from an image answered "no defect here" (a ``none`` label row)."""
    image_size: int | None = None
    """Side of the whole-image patch of image-level labels (None: ``size``). A cell whose defects
    are 1-3 px wide needs its native resolution; a dent 20 px across does not."""

    @property
    def whole_image_size(self) -> int:
        return self.image_size or self.size


@dataclass
class CutPatch:
    kind: str  # image | point | box | negative
    label: str
    x: float
    y: float
    context: np.ndarray  # (S, S[, C]) uint8

    def patch(self, size: int) -> np.ndarray:
        return center_crop(self.context, size)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The central size x size part of one image (H, W[, C])."""
    off_y, off_x = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[off_y:off_y + size, off_x:off_x + size]


def center_crop_stack(arr: np.ndarray, size: int) -> np.ndarray:
    """The central size x size part of every image in a stack (N, H, W[, C])."""
    off_y, off_x = (arr.shape[1] - size) // 2, (arr.shape[2] - size) // 2
    return arr[:, off_y:off_y + size, off_x:off_x + size]


def crop_centered(image: np.ndarray, cx: float, cy: float, side: int) -> np.ndarray:
    """A side x side window centered on (cx, cy), mirrored (reflect) where it leaves the image.

    The window covers columns [round(cx) - side//2, round(cx) - side//2 + side) and likewise rows.
    """
    h, w = image.shape[:2]
    x0 = int(round(cx)) - side // 2
    y0 = int(round(cy)) - side // 2
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x0 + side - w), max(0, y0 + side - h)
    if pad_l or pad_t or pad_r or pad_b:
        # Reflect the whole image (cheap relative to decoding it) so mirrored pixels are right
        # even when the window hangs far over the edge.
        pads = ((pad_t, pad_b), (pad_l, pad_r)) + (((0, 0),) if image.ndim == 3 else ())
        padded = np.pad(image, pads, mode="reflect" if min(h, w) > 1 else "edge")
        return padded[y0 + pad_t:y0 + pad_t + side, x0 + pad_l:x0 + pad_l + side].copy()
    return image[y0:y0 + side, x0:x0 + side].copy()


def _overlaps(box, boxes: np.ndarray) -> bool:
    if len(boxes) == 0:
        return False
    x0, y0, x1, y1 = box
    return bool(np.any((boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)))


def sample_negative_centers(rng: np.random.Generator, width: int, height: int, size: int,
                            defect_boxes: np.ndarray, n: int, max_tries: int = 200) -> list[tuple[int, int]]:
    """Up to n window centers whose size x size window lies inside the image and intersects no
    defect box (rows xmin, ymin, xmax, ymax) nor an earlier negative."""
    if width < size or height < size or n <= 0:
        return []
    half = size // 2
    taken = np.asarray(defect_boxes, dtype=np.float64).reshape(-1, 4)
    out: list[tuple[int, int]] = []
    for _ in range(max_tries * n):
        if len(out) >= n:
            break
        cx = int(rng.integers(half, width - size + half + 1))
        cy = int(rng.integers(half, height - size + half + 1))
        box = (cx - half, cy - half, cx - half + size, cy - half + size)
        if not _overlaps(box, taken):
            out.append((cx, cy))
            taken = np.vstack([taken, np.asarray(box, dtype=np.float64)[None]])
    return out


def cut_image_patches(image: np.ndarray, rows: list[dict], spec: PatchSpec,
                      rng: np.random.Generator) -> list[CutPatch]:
    """All patches of one image given its normalized label rows (dicts with kind, label, x, y,
    xmin..ymax). Points/boxes win over an image-level label of the same image."""
    S = context_size(spec.size)
    h, w = image.shape[:2]
    local = [r for r in rows if r["kind"] in ("point", "box")]
    if local:
        out, boxes = [], []
        r_def = spec.defect_radius if spec.defect_radius is not None else spec.size / 2
        for r in local:
            out.append(CutPatch(r["kind"], r["label"], float(r["x"]), float(r["y"]),
                                crop_centered(image, r["x"], r["y"], S)))
            if r["kind"] == "box":
                boxes.append((r["xmin"], r["ymin"], r["xmax"], r["ymax"]))
            else:
                boxes.append((r["x"] - r_def, r["y"] - r_def, r["x"] + r_def, r["y"] + r_def))
        n_neg = int(round(len(local) * spec.negatives_per_positive))
        for cx, cy in sample_negative_centers(rng, w, h, spec.size, np.asarray(boxes), n_neg, spec.max_negative_tries):
            out.append(CutPatch("negative", NEGATIVE_LABEL, float(cx), float(cy), crop_centered(image, cx, cy, S)))
        return out
    if any(r["kind"] == "none" for r in rows):  # looked at, no defect: windows anywhere are negatives
        centers = sample_negative_centers(rng, w, h, spec.size, np.zeros((0, 4)), spec.negatives_per_clean_image,
                                          spec.max_negative_tries)
        return [CutPatch("negative", NEGATIVE_LABEL, float(cx), float(cy), crop_centered(image, cx, cy, S))
                for cx, cy in centers]
    image_rows = [r for r in rows if r["kind"] == "image"]
    if not image_rows:
        return []
    side = spec.whole_image_size
    small = whole_image_patch(image, side)  # the same function the scoring service uses
    pad = (context_size(side) - side) // 2
    pads = ((pad, pad), (pad, pad)) + (((0, 0),) if small.ndim == 3 else ())
    ctx = np.pad(small, pads, mode="reflect")
    return [CutPatch("image", image_rows[0]["label"], w / 2, h / 2, ctx)]
