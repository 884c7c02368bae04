"""PatchCore-style anomaly detection on the pretrained EfficientNet-Lite backbone, trained on good
images only (Roth et al. 2022, arXiv 2106.08265), in NumPy.

Features: two mid-level stage maps of the frozen backbone (by default Lite0's stage 3, stride 8,
40 channels, and stage 5, stride 16, 112 channels), each averaged over its 3x3 neighbourhood
(local context, as PatchCore's pooling), the deeper one upsampled to the finer grid, concatenated
(optionally randomly projected to fewer dimensions). The memory bank is every ``patch_stride``-th
location of the good training images, reduced by greedy k-center coreset subsampling to a stated
size; the greedy search runs on a random projection of the features (as in PatchCore) over a
bounded random pool of candidates, so its cost is ``coreset x pool x projected dims`` whatever the
number of images. A patch's anomaly score is the distance to its nearest neighbour in the bank
(chunked matrix products); an image's score is its largest patch score; its anomaly map is the
patch scores upsampled to the image.

Probability-like output: the score goes through a logistic curve fitted on good images held out
of the bank (``calibration``): the median held-out good score maps to 0.01 and its 99th
percentile to 0.5. Monotone, so every ranking metric is the raw score's; the decision threshold is
then chosen on validation like any other family's probability.

Stored without pickle: ``patchcore.npz`` (bank, projection) and the card's JSON (``anomaly``).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from defect_assets.ml.scorer import Scorer

MODEL_FILE = "patchcore.npz"
KIND = "anomaly"
DEFAULT_STAGES = ("3", "5")
MIN_BANK = 1000
MAP_SIGMA = 4.0
"""Gaussian smoothing of the anomaly map, in image pixels (PatchCore's sigma)."""
"""A pool this small is kept whole (the coreset ratio would leave too few patches of a small set)."""


def _pool3(m: np.ndarray) -> np.ndarray:
    """(N, h, w, C) -> the mean over each location's 3x3 neighbourhood (edges: the cells present)."""
    n, h, w, c = m.shape
    p = np.pad(m, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ones = np.pad(np.ones((h, w), np.float32), 1)
    s = np.zeros_like(m)
    cnt = np.zeros((h, w), np.float32)
    for dy in range(3):
        for dx in range(3):
            s += p[:, dy:dy + h, dx:dx + w]
            cnt += ones[dy:dy + h, dx:dx + w]
    return s / cnt[None, :, :, None]


def _resize_bilinear(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, gh, gw, C) -> (N, h, w, C), bilinear between cell centres (as ml.saliency._upsample)."""
    _, gh, gw, _ = m.shape
    if (gh, gw) == (h, w):
        return m
    ys = np.clip((np.arange(h) + 0.5) * gh / h - 0.5, 0, gh - 1)
    xs = np.clip((np.arange(w) + 0.5) * gw / w - 0.5, 0, gw - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    wy = (ys - y0).astype(np.float32)[None, :, None, None]
    wx = (xs - x0).astype(np.float32)[None, None, :, None]
    top = m[:, y0][:, :, x0] * (1 - wx) + m[:, y0][:, :, x1] * wx
    bottom = m[:, y1][:, :, x0] * (1 - wx) + m[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy


def gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) separable Gaussian blur (edges reflected), as PatchCore smooths its maps (sigma 4)."""
    if sigma <= 0:
        return a
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = np.asarray(a, np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="reflect" if out.shape[axis] > r else "edge")
        out = sum(k[i] * np.take(p, np.arange(i, i + out.shape[axis]), axis=axis) for i in range(2 * r + 1))
    return out


def upsample_map(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """(gh, gw) patch scores -> (h, w) over the image."""
    return _resize_bilinear(np.asarray(a, np.float32)[None, :, :, None], h, w)[0, :, :, 0]


class PatchFeatures:
    """Pixels (N, S, S[, C]) uint8 -> (N, gh, gw, D) float32 locally aware patch features."""

    def __init__(self, backbone: str, channels: int, stages: tuple[str, ...] = DEFAULT_STAGES,
                 projection: np.ndarray | None = None):
        from defect_assets.ml.lite_onnx import OnnxExtractor

        self.stages, self.projection = tuple(str(s) for s in stages), projection
        self.maps = OnnxExtractor(backbone, channels, self.stages, maps=True)

    def raw_dims(self, probe: int = 64) -> int:
        return int(self(np.zeros((1, probe, probe, self.maps.channels), np.uint8), project=False).shape[-1])

    def __call__(self, pixels: np.ndarray, project: bool = True, batch_size: int = 16) -> np.ndarray:
        x = np.asarray(pixels)
        if x.ndim == 3:
            x = x[..., None]
        out = []
        for lo in range(0, len(x), batch_size):
            maps = [np.asarray(m, np.float32) for m in self.maps(x[lo:lo + batch_size])]
            h, w = maps[0].shape[1:3]
            parts = [_resize_bilinear(_pool3(m), h, w) for m in maps]
            f = np.concatenate(parts, axis=-1)
            if project and self.projection is not None:
                f = f @ self.projection
            out.append(f.astype(np.float32))
        return np.concatenate(out)


def random_projection(d_in: int, d_out: int, seed: int) -> np.ndarray:
    """A Gaussian random projection (Johnson-Lindenstrauss), columns scaled by 1/sqrt(d_out)."""
    return (np.random.default_rng(seed).standard_normal((d_in, d_out)) / math.sqrt(d_out)).astype(np.float32)


def greedy_coreset(x: np.ndarray, k: int, project_dims: int = 64, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` rows of ``x`` chosen by greedy k-center (each next point the one farthest
    from those chosen), distances computed on a random projection to ``project_dims``. Cost:
    k x len(x) x project_dims multiply-adds, vectorised over the rows."""
    n = len(x)
    if k >= n:
        return np.arange(n)
    z = x @ random_projection(x.shape[1], project_dims, seed) if x.shape[1] > project_dims else x
    z = np.ascontiguousarray(z, np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    chosen = np.empty(k, np.int64)
    idx = int(np.random.default_rng(seed).integers(n))
    min_d = np.full(n, np.inf, np.float32)
    for i in range(k):
        chosen[i] = idx
        d = sq - 2 * (z @ z[idx]) + sq[idx]
        np.minimum(min_d, d, out=min_d)
        idx = int(np.argmax(min_d))
    return chosen


def nearest_distance(x: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray | None = None, chunk: int = 1024
                     ) -> np.ndarray:
    """(P,) Euclidean distance of each row of ``x`` (P, D) to its nearest row of ``bank`` (M, D)."""
    bank_sq = np.einsum("ij,ij->i", bank, bank) if bank_sq is None else bank_sq
    out = np.empty(len(x), np.float32)
    for lo in range(0, len(x), chunk):
        q = x[lo:lo + chunk]
        d = np.einsum("ij,ij->i", q, q)[:, None] - 2 * (q @ bank.T) + bank_sq[None]
        out[lo:lo + chunk] = np.sqrt(np.maximum(d.min(axis=1), 0))
    return out


@dataclass
class PatchCore:
    bank: np.ndarray
    """(M, D) coreset of good patch features."""
    backbone: str
    channels: int
    stages: tuple[str, ...]
    projection: np.ndarray | None = None
    calibration: dict = field(default_factory=dict)
    """{'center', 'width'}: p = sigmoid((score - center) / width)."""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.bank = np.ascontiguousarray(self.bank, np.float32)
        self._bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)
        self._features: PatchFeatures | None = None

    @property
    def features(self) -> PatchFeatures:
        if self._features is None:
            self._features = PatchFeatures(self.backbone, self.channels, self.stages, self.projection)
        return self._features

    def patch_scores(self, pixels: np.ndarray) -> np.ndarray:
        """(N, gh, gw) nearest-neighbour distances of every patch location."""
        f = self.features(pixels)
        n, gh, gw, d = f.shape
        return nearest_distance(f.reshape(-1, d), self.bank, self._bank_sq).reshape(n, gh, gw)

    def image_scores(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros(0, np.float32)
        return self.patch_scores(pixels).reshape(len(pixels), -1).max(axis=1)

    def probability(self, score: np.ndarray) -> np.ndarray:
        c, w = float(self.calibration.get("center", 0.0)), float(self.calibration.get("width", 1.0))
        return (1.0 / (1.0 + np.exp(-np.clip((np.asarray(score, np.float64) - c) / w, -60, 60)))).astype(np.float32)

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        p = self.probability(self.image_scores(pixels))
        return np.stack([1 - p, p], axis=1).astype(np.float32)

    def anomaly_map(self, pixel: np.ndarray) -> tuple[float, np.ndarray]:
        """(defect probability, (H, W) map) of one image at the model's input size. The map is the
        patch distances upsampled to the image, smoothed (Gaussian, ``MAP_SIGMA`` px) and scaled
        so that its maximum is the image's probability (p x distance / largest distance): the
        logistic curve itself would flatten every clearly anomalous patch to 1 and lose where
        the peak is."""
        x = np.asarray(pixel)
        s = self.patch_scores(x[None])[0].astype(np.float64)
        p = float(self.probability(s.max()))
        up = gaussian_blur(upsample_map(s, *x.shape[:2]), MAP_SIGMA)
        return p, (p * up / max(float(up.max()), 1e-12)).astype(np.float32)

    def calibrate(self, good_scores: np.ndarray) -> None:
        s = np.asarray(good_scores, np.float64)
        q50, q99 = (float(np.percentile(s, 50)), float(np.percentile(s, 99))) if len(s) else (0.0, 1.0)
        width = max((q99 - q50) / math.log(99), 1e-6)
        self.calibration = {"center": q99, "width": width, "n": int(len(s)), "median": q50}

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {"bank": self.bank}
        if self.projection is not None:
            arrays["projection"] = self.projection
        np.savez(buf, **arrays)
        return buf.getvalue()

    def meta(self) -> dict:
        """What the card records (JSON): everything but the arrays."""
        return {"backbone": self.backbone, "channels": self.channels, "stages": list(self.stages),
                "calibration": self.calibration, "bank_size": int(len(self.bank)), "dims": int(self.bank.shape[1]),
                **self.info}

    @classmethod
    def from_parts(cls, data: bytes, meta: dict) -> PatchCore:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        proj = z["projection"] if "projection" in z.files else None
        info = {k: v for k, v in meta.items() if k not in ("backbone", "channels", "stages", "calibration",
                                                             "bank_size", "dims")}
        return cls(z["bank"], str(meta["backbone"]), int(meta["channels"]), tuple(meta["stages"]), proj,
                   dict(meta.get("calibration", {})), info)


def fit_patchcore(good: np.ndarray, backbone: str = "lite0", stages: tuple[str, ...] = DEFAULT_STAGES,
                  coreset_size: int = 4000, coreset_ratio: float = 0.1, patch_stride: int = 2,
                  pool_size: int = 150_000, dims: int | None = None, calibration_fraction: float = 0.2,
                  seed: int = 0, log: Callable[[str], None] | None = None) -> PatchCore:
    """PatchCore on good images ``good`` (N, S, S[, C]) uint8. A ``calibration_fraction`` of them
    (at least 1 when N > 1) is kept out of the bank; their image scores calibrate the probability.
    The bank: every ``patch_stride``-th location of the others' grids, a random pool of at most
    ``pool_size`` of them, then the greedy coreset of min(coreset_size, coreset_ratio x the
    pool) of the pool (a pool of at most ``MIN_BANK`` is kept whole, a larger one keeps at least
    that many). ``dims``: random projection of the features (None: keep them all)."""
    log = log or (lambda _m: None)
    x = np.asarray(good)
    if x.ndim == 3:
        x = x[..., None]
    if len(x) == 0:
        raise ValueError("no good images to build the memory bank from")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_cal = int(round(len(x) * calibration_fraction)) if len(x) > 1 else 0
    n_cal = min(max(n_cal, 1 if len(x) > 1 and calibration_fraction > 0 else 0), len(x) - 1)
    cal_idx, bank_idx = np.sort(order[:n_cal]), np.sort(order[n_cal:])
    t0 = time.perf_counter()
    feats = PatchFeatures(backbone, int(x.shape[-1]), stages)
    projection = None
    if dims:
        raw = feats.raw_dims()
        if dims < raw:
            projection = random_projection(raw, int(dims), seed + 1)
            feats.projection = projection
    rows, locations = [], 0
    step = max(1, int(patch_stride))
    for lo in range(0, len(bank_idx), 64):
        f = feats(x[bank_idx[lo:lo + 64]])
        locations += f.shape[0] * f.shape[1] * f.shape[2]
        rows.append(f[:, ::step, ::step].reshape(-1, f.shape[-1]))
    cand = np.concatenate(rows)
    t_feat = time.perf_counter() - t0
    if len(cand) > pool_size:
        cand = cand[np.sort(rng.choice(len(cand), pool_size, replace=False))]
    k = int(min(coreset_size, max(math.ceil(coreset_ratio * len(cand)), min(len(cand), MIN_BANK))))
    t1 = time.perf_counter()
    bank = cand[greedy_coreset(cand, k, seed=seed)]
    t_core = time.perf_counter() - t1
    log(f"patchcore: {len(bank_idx)} good images in the bank ({locations:,} patch locations, "
        f"{len(cand):,} candidates), coreset {len(bank):,} x {bank.shape[1]} dims; features {t_feat:.1f}s, "
        f"coreset {t_core:.1f}s")
    model = PatchCore(bank, backbone, int(x.shape[-1]), tuple(stages), projection,
                      info={"patch_stride": step, "pool_size": int(pool_size), "coreset_size": int(coreset_size),
                            "coreset_ratio": float(coreset_ratio), "candidates": int(len(cand)),
                            "bank_images": int(len(bank_idx)), "feature_seconds": round(t_feat, 2),
                            "coreset_seconds": round(t_core, 2)})
    model._features = feats
    cal = model.image_scores(x[cal_idx]) if len(cal_idx) else model.image_scores(x[bank_idx])
    model.calibrate(cal)
    model.info["calibration_images"] = int(len(cal_idx))
    return model


def meta_json(model: PatchCore) -> str:
    return json.dumps(model.meta(), sort_keys=True)


class AnomalyScorer(Scorer):
    """The ``Scorer`` of an anomaly card: probabilities [1 - p, p] of the calibrated image score,
    and its anomaly map (``explain``, ``anomaly_map``): no occlusion needed."""

    exact_map = True

    def __init__(self, card, model: PatchCore, compiled: bool = False):
        super().__init__(card, model.predict_proba, compiled)
        self.model = model

    @property
    def cost(self) -> int:
        # backbone (about 400 MACs per input pixel for Lite0 to stage 5) + the nearest-neighbour search
        s, d = self.input_size, int(self.model.bank.shape[1])
        grid = math.ceil(s / 8) ** 2
        return int(400 * s * s * self.channels + grid * len(self.model.bank) * d) * self.views

    def explain(self, patch: np.ndarray) -> tuple[float, np.ndarray]:
        """(defect probability, map at the patch's size): the anomaly map."""
        x = np.asarray(patch)
        if x.ndim == 2:
            x = x[..., None]
        h, w = x.shape[:2]
        if (h, w) != (self.input_size, self.input_size):
            from defect_assets.ml.preprocess import shrink_patches

            x = shrink_patches(x[None], self.input_size)[0]
            if x.ndim == 2:
                x = x[..., None]
        p, m = self.model.anomaly_map(x)
        return p, (upsample_map(m, h, w) if m.shape != (h, w) else m)

    def photo_map(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W) anomaly map of a whole photo (any size, as ``Scorer.pixels`` decodes it) in one
        pass: the network is convolutional, so every patch of the photo is scored against the bank
        at once (windows are not needed for the map). Scaled as ``PatchCore.anomaly_map``. A photo
        is first shrunk by the factor the training patches were (patch size -> input size)."""
        x = np.asarray(pixels)
        if x.ndim == 2:
            x = x[..., None]
        h, w = x.shape[:2]
        if self.patch_size != self.input_size:
            from PIL import Image

            f = self.input_size / self.patch_size
            size = (max(8, round(w * f)), max(8, round(h * f)))
            x = np.stack([np.asarray(Image.fromarray(x[..., c]).resize(size, Image.BOX)) for c in range(x.shape[2])],
                         axis=-1)
        sh, sw = x.shape[:2]
        if min(sh, sw) < 32:  # too small for the backbone's grid: edge-padded, the map cropped back
            x = np.pad(x, ((0, max(0, 32 - sh)), (0, max(0, 32 - sw)), (0, 0)), mode="edge")
        _, m = self.model.anomaly_map(x)
        m = m[:sh, :sw]
        return upsample_map(m, h, w) if m.shape != (h, w) else m

    def anomaly_map(self, image) -> tuple[float, np.ndarray]:
        """One image as it comes (bytes, PIL, array): (probability, map at the model's input size)."""
        return self.explain(self.prepare(image))


def load_anomaly(card, read_file, compiled: bool, load_version) -> AnomalyScorer:
    """The scorer loader of the ``anomaly`` card kind (``register_family(scorer=...)``)."""
    meta = card.to_dict().get("anomaly")
    if not meta:
        raise ValueError(f"anomaly model {card.version}: its card has no 'anomaly' section")
    return AnomalyScorer(card, PatchCore.from_parts(read_file(MODEL_FILE), meta), compiled)
