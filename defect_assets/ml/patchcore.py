"""Anomaly detection on the pretrained EfficientNet-Lite backbone, trained on good images only: the
patch features of PatchCore (Roth et al. 2022, arXiv 2106.08265) scored either position-aware, by a
Gaussian per grid location as PaDiM (Defard et al. 2020, arXiv 2011.08785), or position-blind, by
PatchCore's nearest neighbour in a memory bank.

Patch features: two mid-level stage maps of the frozen backbone (by default Lite0's stage 3, stride
8, 40 channels, and stage 5, stride 16, 112 channels), each averaged over its 3x3 neighbourhood,
brought onto one grid (``grid_stage``, by default stage 5's: 19 x 19 locations of a 300 px image; a
finer map by the mean of each 2x2 block, a coarser one bilinearly) and concatenated, 152 dimensions
(``location`` projects them to 64 by default: a Gaussian random projection).

Scoring (``scoring``):
- ``location`` (the default; aligned images of one size, such as ELPV's cells): the good images
  are split into ``kinds`` by k-means on their mean feature (no label read: on ELPV the kinds
  found are the mono and poly cells); for each kind and grid location, the mean and the covariance
  (shrunk toward its mean diagonal by ``shrinkage``) of the good images' features there; a patch's
  score is its Mahalanobis distance at its location, in the kind whose centroid is nearest the
  image's mean feature. Defined at the training size only: a photo of another size is scored frame
  by frame for its map (``AnomalyScorer.photo_map``).
- ``nearest`` (photos of any size, defects anywhere): the memory bank is every ``patch_stride``-th
  location of the good training images, reduced by greedy k-center coreset subsampling (on a random
  projection, over a bounded random pool); a patch's score is the distance to its nearest bank row.
An image's raw score is its largest patch score; its anomaly map is the patch scores upsampled to
the image and smoothed. Why position-aware by default: ELPV's cells are aligned 300 px images with
fixed structure (busbars, edges, grain), which a position-blind bank takes for normal wherever it
appears; on ELPV's validation split the nearest neighbour scores ROC AUC 0.817, two kinds of
per-location Gaussians 0.905 (``bench/results/anomaly_experiments.txt``), and the test split 0.902.

Score and probability: the raw score is normalized by the good images held out of the model
(``calibration_fraction``), per kind: (raw - median) / (1.4826 x MAD), so that the kinds' scales
agree; the normalized score goes through a logistic curve: the held-out median maps to 0.01 and
their 99th percentile to 0.5. Monotone within a kind; the decision threshold is chosen on
validation like any other family's probability.

Inference: all of it (backbone, features, distances, normalization, calibration) is one ONNX graph
(``ml/anomaly_onnx.py``) run by ONNX Runtime, the very graph the exporter writes.

Stored without pickle: ``patchcore.npz`` (the Gaussians or the bank, the projection) and the card's
JSON (``anomaly``). Cards written before the position-aware scoring load as ``nearest``.
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
SCORINGS = ("location", "nearest")
DEFAULT_STAGES = ("3", "5")
DEFAULT_GRID = {"location": "5", "nearest": "3"}
"""The grid of each scoring's features: stage 5's (stride 16) for the Gaussians (better on ELPV's
validation split, and 4x fewer of them), stage 3's (stride 8) for the bank (finer maps)."""
DEFAULT_DIMS = {"location": 64, "nearest": 0}
"""Each scoring's random projection (0: none): the Gaussians' size goes with dims^2."""
MIN_BANK = 1000
"""A pool this small is kept whole (the coreset ratio would leave too few patches of a small set)."""
MAP_SIGMA = 4.0
"""Gaussian smoothing of the anomaly map, in image pixels (PatchCore's sigma)."""
MIN_KIND_IMAGES = 50
"""Good images per kind at least: fewer images make fewer kinds (one Gaussian set per kind)."""
MIN_KIND_CALIBRATION = 10
"""A kind with fewer held-out good images is normalized with all of them."""
BATCH = 16
"""Images per graph call."""


def _run_batches(sess, outputs: list[str], pixels: np.ndarray) -> dict[str, np.ndarray]:
    """{output: (N, ...)} of an ONNX Runtime session on uint8 (N, H, W[, C]) pixels, ``BATCH`` per call."""
    x = np.asarray(pixels)
    if x.ndim == 3:
        x = x[..., None]
    x = np.ascontiguousarray(x, dtype=np.uint8)
    parts = [dict(zip(outputs, sess.run(outputs, {"pixels": x[lo:lo + BATCH]}))) for lo in range(0, len(x), BATCH)]
    return {k: np.concatenate([p[k] for p in parts]) for k in outputs}


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
    """(H, W) Gaussian blur (edges mirrored, truncated at 3 sigma), as PatchCore smooths its maps
    (sigma 4); scipy's separable filter in float32, no BLAS threads woken between two graph calls."""
    if sigma <= 0:
        return a
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(a, np.float32), float(sigma), mode="mirror", truncate=3.0)


def upsample_map(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """(gh, gw) patch scores -> (h, w) over the image."""
    return _resize_bilinear(np.asarray(a, np.float32)[None, :, :, None], h, w)[0, :, :, 0]


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


@dataclass
class LocationGaussians:
    """One Gaussian per kind of image and grid location (row-major over the grid)."""

    centroids: np.ndarray
    """(K, D) the kinds' mean image features (k-means centres)."""
    means: np.ndarray
    """(K, L, D)."""
    inv_covs: np.ndarray
    """(K, L, D, D) inverses of the shrunk covariances."""


def fit_gaussians(f: np.ndarray, labels: np.ndarray, kinds: int, shrinkage: float) -> LocationGaussians:
    """Per kind and location of ``f`` (N, L, D): the mean and the inverse of (1 - a) S + a tr(S)/D I
    (S the sample covariance, a = ``shrinkage``: the shrinkage target of Ledoit and Wolf at a fixed
    weight, which keeps S invertible with fewer images than dimensions). Float64, blocks of locations."""
    n, locs, d = f.shape
    centroids = np.zeros((kinds, d), np.float32)
    means = np.zeros((kinds, locs, d), np.float32)
    inv = np.zeros((kinds, locs, d, d), np.float32)
    eye = np.eye(d)
    for k in range(kinds):
        fk = f[labels == k]
        centroids[k] = fk.mean(axis=(0, 1))
        for lo in range(0, locs, 64):
            x = fk[:, lo:lo + 64].astype(np.float64)
            mu = x.mean(axis=0)
            c = x - mu
            cov = np.einsum("nld,nle->lde", c, c) / max(len(fk) - 1, 1)
            tr = np.trace(cov, axis1=1, axis2=2) / d
            cov = (1 - shrinkage) * cov + (shrinkage * tr + 1e-6)[:, None, None] * eye
            means[k, lo:lo + 64] = mu
            inv[k, lo:lo + 64] = np.linalg.inv(cov)
    return LocationGaussians(centroids, means, inv)


@dataclass
class AnomalyModel:
    backbone: str
    channels: int
    stages: tuple[str, ...]
    scoring: str = "location"
    grid_stage: str = "5"
    gaussians: LocationGaussians | None = None
    bank: np.ndarray | None = None
    """(M, D) coreset of good patch features (``nearest``)."""
    projection: np.ndarray | None = None
    dims: int = 0
    """Feature dimensions before the projection."""
    grid: tuple[int, int] | None = None
    """(gh, gw) of the training images (``location``: the only grid it scores)."""
    normalization: dict = field(default_factory=lambda: {"center": [0.0], "spread": [1.0]})
    """Per kind: score = (largest patch distance - center) / spread."""
    calibration: dict = field(default_factory=dict)
    """{'center', 'width'}: p = sigmoid((score - center) / width)."""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, not {self.scoring!r}")
        self.stages = tuple(str(s) for s in self.stages)
        self.grid_stage = str(self.grid_stage)
        if self.grid_stage not in self.stages:
            raise ValueError(f"grid_stage {self.grid_stage!r} is not one of the stages {self.stages}")
        self._session, self._session_key, self._outputs = None, "", []
        self._shared: dict = {}  # the scoring graph merged with an elastic net's features (one backbone pass)

    @property
    def raw_dims(self) -> int:
        return int(self.projection.shape[0]) if self.projection is not None else int(self.dims)

    @property
    def feature_dims(self) -> int:
        return int(self.projection.shape[1]) if self.projection is not None else int(self.dims)

    @property
    def kinds(self) -> int:
        return len(self.gaussians.centroids) if self.gaussians is not None else 1

    def onnx_graph(self, with_map: bool = True):
        from defect_assets.ml.anomaly_onnx import scoring_graph

        return scoring_graph(self, self.channels, with_map)

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """(N, H, W[, C]) uint8 -> {'proba' (N, 2), 'score' (N,), 'patch_scores' (N, gh, gw)[, 'kind']}
        through the scoring graph on ONNX Runtime, ``BATCH`` images per call."""
        key = json.dumps([self.normalization, self.calibration], sort_keys=True)
        if self._session is None or self._session_key != key:  # the graph holds both: rebuilt when they change
            from defect_assets.ml.lite_onnx import session

            self._session = session(self.onnx_graph().SerializeToString(), spinning=False)
            self._session_key, self._outputs = key, [o.name for o in self._session.get_outputs()]
        return _run_batches(self._session, self._outputs, pixels)

    def image_scores(self, pixels: np.ndarray) -> np.ndarray:
        """(N,) normalized image scores (what the calibration turns into probabilities)."""
        if len(pixels) == 0:
            return np.zeros(0, np.float32)
        return self.run(pixels)["score"]

    def probability(self, score: np.ndarray) -> np.ndarray:
        c, w = float(self.calibration.get("center", 0.0)), float(self.calibration.get("width", 1.0))
        return (1.0 / (1.0 + np.exp(-np.clip((np.asarray(score, np.float64) - c) / w, -60, 60)))).astype(np.float32)

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, 2), np.float32)
        return self.run(pixels)["proba"]

    def run_with_features(self, pixels: np.ndarray, stages: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, 2), pooled features (N, D) of ``stages``) from one backbone pass
        (``anomaly_onnx.with_pooled_features``): an elastic net on the same backbone reads the features."""
        key = json.dumps([self.normalization, self.calibration, list(stages)], sort_keys=True)
        if key not in self._shared:
            from defect_assets.ml.anomaly_onnx import with_pooled_features
            from defect_assets.ml.lite_onnx import session

            self._shared = {key: session(with_pooled_features(self, self.channels, tuple(stages)).SerializeToString(),
                                         spinning=False)}
        out = _run_batches(self._shared[key], ["proba", "features"], pixels)
        return out["proba"], out["features"]

    def anomaly_map(self, pixel: np.ndarray) -> tuple[float, np.ndarray]:
        """(defect probability, (H, W) map) of one image at the model's input size. The map is the
        patch distances upsampled to the image, smoothed (Gaussian, ``MAP_SIGMA`` px) and scaled
        so that its maximum is the image's probability (p x distance / largest distance): the
        logistic curve itself would flatten every clearly anomalous patch to 1 and lose where
        the peak is."""
        x = np.asarray(pixel)
        out = self.run(x[None])
        p = float(out["proba"][0, 1])
        return p, scaled_map(out["patch_scores"][0], x.shape[:2], p)

    def calibrate(self, raw: np.ndarray, kinds: np.ndarray) -> None:
        """Normalization per kind and the logistic curve from the held-out good images' raw scores."""
        raw, kinds = np.asarray(raw, np.float64), np.asarray(kinds)
        center, spread = [], []
        for k in range(self.kinds):
            ref = raw[kinds == k] if (kinds == k).sum() >= MIN_KIND_CALIBRATION else raw
            med = float(np.median(ref)) if len(ref) else 0.0
            center.append(med)
            spread.append(max(1.4826 * float(np.median(np.abs(ref - med))) if len(ref) else 1.0, 1e-6))
        self.normalization = {"center": center, "spread": spread,
                              "images": [int((kinds == k).sum()) for k in range(self.kinds)]}
        s = (raw - np.asarray(center)[kinds]) / np.asarray(spread)[kinds] if len(raw) else raw
        q50, q99 = (float(np.percentile(s, 50)), float(np.percentile(s, 99))) if len(s) else (0.0, 1.0)
        width = max((q99 - q50) / math.log(99), 1e-6)
        self.calibration = {"center": q99, "width": width, "n": int(len(s)), "median": q50}

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {}
        if self.gaussians is not None:
            g = self.gaussians
            arrays.update(centroids=g.centroids, means=g.means, inv_covs=g.inv_covs)
        if self.bank is not None:
            arrays["bank"] = self.bank
        if self.projection is not None:
            arrays["projection"] = self.projection
        np.savez(buf, **arrays)
        return buf.getvalue()

    def meta(self) -> dict:
        """What the card records (JSON): everything but the arrays."""
        return {"backbone": self.backbone, "channels": self.channels, "stages": list(self.stages),
                "scoring": self.scoring, "grid_stage": self.grid_stage, "kinds": self.kinds,
                "grid": list(self.grid) if self.grid else None, "raw_dims": self.raw_dims,
                "normalization": self.normalization, "calibration": self.calibration,
                "bank_size": int(len(self.bank)) if self.bank is not None else 0, "dims": self.feature_dims,
                **self.info}

    @classmethod
    def from_parts(cls, data: bytes, meta: dict) -> AnomalyModel:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        proj = z["projection"] if "projection" in z.files else None
        bank = np.ascontiguousarray(z["bank"], np.float32) if "bank" in z.files else None
        gaussians = (LocationGaussians(z["centroids"], z["means"], z["inv_covs"]) if "inv_covs" in z.files else None)
        own = ("backbone", "channels", "stages", "scoring", "grid_stage", "kinds", "grid", "raw_dims",
               "normalization", "calibration", "bank_size", "dims")
        stages = tuple(str(s) for s in meta["stages"])
        dims = int(meta.get("raw_dims") or (proj.shape[0] if proj is not None else meta["dims"]))
        # cards before issue 23's position-aware scoring: nearest neighbour on the finest stage's grid
        return cls(str(meta["backbone"]), int(meta["channels"]), stages, str(meta.get("scoring", "nearest")),
                   str(meta.get("grid_stage", stages[0])), gaussians, bank, proj, dims,
                   tuple(meta["grid"]) if meta.get("grid") else None,
                   dict(meta.get("normalization") or {"center": [0.0], "spread": [1.0]}),
                   dict(meta.get("calibration", {})), {k: v for k, v in meta.items() if k not in own})


def scaled_map(patch_scores: np.ndarray, shape: tuple[int, int], p: float) -> np.ndarray:
    """Patch distances -> the (H, W) map: upsampled, smoothed, scaled so its maximum is ``p``."""
    up = gaussian_blur(upsample_map(patch_scores, *shape), MAP_SIGMA)
    return (p * up / max(float(up.max()), 1e-12)).astype(np.float32)


def _features(model: AnomalyModel, x: np.ndarray, step: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, gh / step, gw / step, D) features of ``x`` (every ``step``-th location each way) through the
    features graph (the scoring graph's first half), and the full (gh, gw)."""
    from defect_assets.ml.anomaly_onnx import features_graph
    from defect_assets.ml.lite_onnx import session

    sess = session(features_graph(model, model.channels).SerializeToString())
    out, grid = [], (0, 0)
    for lo in range(0, len(x), BATCH):
        f = sess.run(["features"], {"pixels": x[lo:lo + BATCH]})[0]
        grid = f.shape[1:3]
        out.append(f[:, ::step, ::step])
    return np.concatenate(out), grid


def _stage_dims(backbone: str, stages: tuple[str, ...]) -> int:
    from defect_assets.ml.efficientnet_lite import converted

    blocks, _ = converted(backbone)
    width = {str(b.stage): b.filters_out for b in blocks}
    return sum(width[s] for s in stages)


def fit_anomaly(good: np.ndarray, backbone: str = "lite0", stages: tuple[str, ...] = DEFAULT_STAGES,
                scoring: str = "location", grid_stage: str | None = None, kinds: int = 2, shrinkage: float = 0.1,
                coreset_size: int = 4000, coreset_ratio: float = 0.1, patch_stride: int = 2,
                pool_size: int = 150_000, dims: int | None = None, calibration_fraction: float = 0.2,
                seed: int = 0, log: Callable[[str], None] | None = None) -> AnomalyModel:
    """An anomaly model of good images ``good`` (N, H, W[, C]) uint8. A ``calibration_fraction`` of
    them (at least 1 when N > 1) is kept out of the model; their scores normalize and calibrate.
    ``location``: up to ``kinds`` kinds (at least ``MIN_KIND_IMAGES`` images each), a Gaussian per
    kind and location, covariance shrinkage ``shrinkage``. ``nearest``: every ``patch_stride``-th
    location of the images' grids, a random pool of at most ``pool_size`` of them, then the greedy
    coreset of min(coreset_size, coreset_ratio x the pool) (a pool of at most ``MIN_BANK`` kept
    whole, a larger one keeps at least that many). ``dims``: random projection of the features (0:
    keep them all). None (``grid_stage``, ``dims``): the scoring's own (``DEFAULT_GRID``, ``DEFAULT_DIMS``)."""
    log = log or (lambda _m: None)
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, not {scoring!r}")
    grid_stage = str(grid_stage or DEFAULT_GRID[scoring])
    dims = DEFAULT_DIMS[scoring] if dims is None else dims
    x = np.asarray(good)
    if x.ndim == 3:
        x = x[..., None]
    if len(x) == 0:
        raise ValueError("no good images to build the anomaly model from")
    stages = tuple(str(s) for s in stages)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_cal = int(round(len(x) * calibration_fraction)) if len(x) > 1 else 0
    n_cal = min(max(n_cal, 1 if len(x) > 1 and calibration_fraction > 0 else 0), len(x) - 1)
    cal_idx, fit_idx = np.sort(order[:n_cal]), np.sort(order[n_cal:])
    raw = _stage_dims(backbone, stages)
    projection = random_projection(raw, int(dims), seed + 1) if dims and dims < raw else None
    model = AnomalyModel(backbone, int(x.shape[-1]), stages, scoring, grid_stage, projection=projection,
                         dims=raw)
    t0 = time.perf_counter()
    step = 1 if scoring == "location" else max(1, int(patch_stride))
    f, (gh, gw) = _features(model, x[fit_idx], step)
    n, d = len(f), f.shape[-1]
    model.grid = (gh, gw)
    t_feat = time.perf_counter() - t0
    t1 = time.perf_counter()
    info: dict = {"fit_images": int(len(fit_idx))}
    if scoring == "location":
        k = int(max(1, min(kinds, len(fit_idx) // MIN_KIND_IMAGES)))
        labels = np.zeros(n, np.int64)
        if k > 1:
            from sklearn.cluster import KMeans

            labels = KMeans(k, n_init=10, random_state=seed).fit_predict(f.mean(axis=(1, 2)).astype(np.float64))
        model.gaussians = fit_gaussians(f.reshape(n, gh * gw, d), labels, k, shrinkage)
        info.update(kind_images=np.bincount(labels, minlength=k).tolist(), shrinkage=float(shrinkage))
        log(f"anomaly: {len(fit_idx)} good images of {x.shape[1]}x{x.shape[2]} px, {k} kind(s) "
            f"{info['kind_images']}, a Gaussian per kind and location of the {gh}x{gw} grid, {d} dims; "
            f"features {t_feat:.1f}s, Gaussians {time.perf_counter() - t1:.1f}s")
    else:
        locations = n * gh * gw
        cand = f.reshape(-1, d)
        del f
        if len(cand) > pool_size:
            cand = cand[np.sort(rng.choice(len(cand), pool_size, replace=False))]
        m = int(min(coreset_size, max(math.ceil(coreset_ratio * len(cand)), min(len(cand), MIN_BANK))))
        model.bank = np.ascontiguousarray(cand[greedy_coreset(cand, m, seed=seed)], np.float32)
        info.update(patch_stride=step, pool_size=int(pool_size), coreset_size=int(coreset_size),
                    coreset_ratio=float(coreset_ratio), candidates=int(len(cand)))
        log(f"anomaly: {len(fit_idx)} good images in the bank ({locations:,} patch locations, {len(cand):,} "
            f"candidates), coreset {len(model.bank):,} x {d} dims; features {t_feat:.1f}s, coreset "
            f"{time.perf_counter() - t1:.1f}s")
    info.update(feature_seconds=round(t_feat, 2), fit_seconds=round(time.perf_counter() - t1, 2))
    model.info = info
    ref = x[cal_idx] if len(cal_idx) else x[fit_idx]
    out = model.run(ref)  # identity normalization and calibration: the raw scores
    model.calibrate(out["score"], out.get("kind", np.zeros(len(ref), np.int64)).reshape(-1))
    model.info["calibration_images"] = int(len(cal_idx))
    return model


def meta_json(model: AnomalyModel) -> str:
    return json.dumps(model.meta(), sort_keys=True)


class AnomalyScorer(Scorer):
    """The ``Scorer`` of an anomaly card: probabilities [1 - p, p] of the calibrated image score,
    and its anomaly map (``explain``, ``anomaly_map``): no occlusion needed."""

    exact_map = True

    def __init__(self, card, model: AnomalyModel, compiled: bool = False):
        super().__init__(card, model.predict_proba, compiled)
        self.model = model

    @property
    def cost(self) -> int:
        # the backbone to stage 5 (about 250 MACs per input pixel for Lite0) + the distances
        m, s = self.model, self.input_size
        grid = math.ceil(s / 16) ** 2 if m.grid_stage in ("4", "5") else math.ceil(s / 8) ** 2
        d = m.feature_dims
        dist = grid * d * d * m.kinds if m.scoring == "location" else grid * len(m.bank) * d
        return int(250 * s * s * self.channels + dist) * self.views

    def shares_backbone_with(self, head) -> bool:
        """Whether ``head`` (a linear head on pooled backbone features) can take its features from this
        model's backbone pass: the same Lite backbone on ONNX Runtime, channels and input size, both
        scoring patches as they come (no shrinking) in one view."""
        spec = head.card.features.to_dict() if head.card.features else {}
        return (spec.get("backbone") == self.model.backbone and spec.get("runtime") == "onnxruntime"
                and head.channels == self.channels and head.input_size == self.input_size == self.patch_size
                and head.patch_size == head.input_size and head.views == 1 == self.views)

    def predict_with_features(self, patches: np.ndarray, head) -> tuple[np.ndarray, np.ndarray]:
        """(this model's probabilities, ``head``'s backbone features) from one backbone pass."""
        return self.model.run_with_features(patches, tuple(str(s) for s in head.card.features.stages))

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
        """(H, W) anomaly map of a whole photo (any size, as ``Scorer.pixels`` decodes it). A photo is
        first shrunk by the factor the training patches were (patch size -> input size). ``nearest``:
        one pass (the network is convolutional, every patch is scored against the bank at once).
        ``location``: its Gaussians know the positions of the training size only, so a photo of
        another size is scored in frames of that size (half a frame apart, the last ones flush with
        the edges), each location of the photo taking its largest distance over the frames. Scaled
        as ``AnomalyModel.anomaly_map``, by the largest frame's probability."""
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
        side = self.input_size if self.model.scoring == "location" else 32
        if min(sh, sw) < side:  # too small for the grid: edge-padded, the map cropped back
            x = np.pad(x, ((0, max(0, side - sh)), (0, max(0, side - sw)), (0, 0)), mode="edge")
        if self.model.scoring == "location" and x.shape[:2] != (side, side):
            p, m = self._framed_map(x, side)
        else:
            p, m = self.model.anomaly_map(x)
        m = m[:sh, :sw]
        return upsample_map(m, h, w) if m.shape != (h, w) else m

    def _framed_map(self, x: np.ndarray, side: int) -> tuple[float, np.ndarray]:
        def starts(n: int) -> list[int]:
            return sorted(set(list(range(0, n - side + 1, max(1, side // 2))) + [n - side]))

        corners = [(y, x0) for y in starts(x.shape[0]) for x0 in starts(x.shape[1])]
        dist = np.zeros(x.shape[:2], np.float32)
        best = -np.inf
        for lo in range(0, len(corners), BATCH):
            chunk = corners[lo:lo + BATCH]
            out = self.model.run(np.stack([x[y:y + side, x0:x0 + side] for y, x0 in chunk]))
            best = max(best, float(out["score"].max()))
            for (y, x0), patch in zip(chunk, out["patch_scores"]):
                view = dist[y:y + side, x0:x0 + side]
                np.maximum(view, upsample_map(patch, side, side), out=view)
        p = float(self.model.probability(best))
        up = gaussian_blur(dist, MAP_SIGMA)
        return p, (p * up / max(float(up.max()), 1e-12)).astype(np.float32)

    def anomaly_map(self, image) -> tuple[float, np.ndarray]:
        """One image as it comes (bytes, PIL, array): (probability, map at the model's input size)."""
        return self.explain(self.prepare(image))


def load_anomaly(card, read_file, compiled: bool, load_version) -> AnomalyScorer:
    """The scorer loader of the ``anomaly`` card kind (``ml/scorer.py`` calls it for every process)."""
    meta = card.to_dict().get("anomaly")
    if not meta:
        raise ValueError(f"anomaly model {card.version}: its card has no 'anomaly' section")
    return AnomalyScorer(card, AnomalyModel.from_parts(read_file(MODEL_FILE), meta), compiled)
