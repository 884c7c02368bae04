"""The one inference seam (in the spirit of anomalib's inferencer): ``load_registered`` loads a
registered model (every file hash-checked by the registry, Keras archives with
``safe_mode=True``) and returns a ``Scorer`` that takes full-size images or model-sized patches
and applies the preprocessing training used (``ml.preprocess.prepare_patch``).

Evaluation, the champion's checks, the deployment smoke test, the scoring service and the
client-side examples all score through it, so what was evaluated is what is served. The
service's compiled fast path (``compiled=True``: the forward pass traced once into a TensorFlow
graph, same weights and operations) is an option of this loader, not a second one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from defect_assets.ml.images import DEFAULT_MAX_PIXELS
from defect_assets.ml.preprocess import prepare_patch, shrink_patches, to_pixels
from defect_assets.ml.records import ModelCard

KERAS_FILE = "model.keras"
LINEAR_FILE = "linear.npz"
CHUNK = 256  # patches per model call: bounded memory for any number of inputs
FALLBACK_MACS_PER_INPUT = 100_000  # VGG16's conv base is about 300k per input pixel, a small CNN far less


def keras_macs(model) -> int | None:
    """Multiply-adds of one forward pass of a Keras model on one input: each layer with a kernel
    (convolutions, depthwise or not, and dense layers) costs its kernel's size times the positions
    of its output; nested models are walked. None when a layer's output shape is unknown."""
    total = 0

    def walk(layer) -> bool:
        nonlocal total
        inner = getattr(layer, "layers", None)
        if inner:
            return all(walk(x) for x in inner)
        kernels = [w for w in getattr(layer, "weights", []) if "kernel" in getattr(w, "path", getattr(w, "name", ""))]
        if not kernels:
            return True
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError, RuntimeError):
            return False
        positions = int(np.prod([d for d in shape[1:-1] if d is not None])) if len(shape) > 2 else 1
        total += positions * sum(int(np.prod(k.shape)) for k in kernels)
        return True

    return total if walk(model) and total > 0 else None


class ModelSource(Protocol):
    """What the loader needs of a model registry (``storage.registry.ModelRegistry``)."""

    def card(self, version: str) -> ModelCard: ...

    def read_file(self, version: str, name: str) -> bytes: ...  # hash-checked against the card


def dihedral_views(patches: np.ndarray, views: int) -> list[np.ndarray]:
    """The first ``views`` of the 8 quarter turns and mirrors of (N, S, S[, C]) patches, the
    identity first: 1 (no test-time views), 2 (+ mirror), 4 (quarter turns) or 8."""
    if views not in (1, 2, 4, 8):
        raise ValueError(f"test-time views must be 1, 2, 4 or 8, not {views}")
    turns = [0] if views in (1, 2) else [0, 1, 2, 3]
    out = [np.rot90(patches, k, axes=(1, 2)) for k in turns]
    if views in (2, 8):
        out += [np.flip(v, axis=2) for v in out]
    return [np.ascontiguousarray(v) for v in out]


class Scorer:
    """A loaded model plus its preprocessing: ``predict_images`` for photos as they come,
    ``predict_proba`` for patches already at the model's input size. When the card asks for
    test-time views (``inference.views``: the quarter turns and mirrors of each patch), the
    probabilities are their average: evaluation and serving get the very same numbers."""

    def __init__(self, card: ModelCard | dict, predict: Callable[[np.ndarray], np.ndarray], compiled: bool = False,
                 macs: int | None = None):
        self.card = ModelCard.from_dict(card)
        self._predict = predict
        self.compiled = compiled
        self._macs = macs

    @property
    def cost(self) -> int:
        """Multiply-adds to score one patch, every test-time view included (counted from the
        network's layers when it is Keras; else ``FALLBACK_MACS_PER_INPUT`` per input value): what
        a request's work budget is measured in."""
        macs = self._macs or FALLBACK_MACS_PER_INPUT * self.input_size ** 2 * self.channels
        return int(macs) * self.views

    @property
    def views(self) -> int:
        return int(self.card.inference.views)

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def input_size(self) -> int:
        return int(self.card.input.size)

    @property
    def channels(self) -> int:
        return int(self.card.input.channels)

    @property
    def patch_size(self) -> int:
        """Side of the patches the model was trained from (its input may be smaller: they are then
        shrunk to ``input_size`` as in training). Equal to ``input_size`` for most models."""
        return int(self.card.input.patch_size or self.input_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one patch as callers pass it: (size, size) for gray, (size, size, 3) for colour."""
        return (self.input_size, self.input_size) + ((self.channels,) if self.channels != 1 else ())

    def prepare(self, image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """One image (encoded bytes, a PIL image or a uint8 array of any size) -> the model's
        input patch, exactly as image-level training patches were made. A patch already at
        the input size passes through unchanged."""
        patch = prepare_patch(image, self.patch_size, self.channels, max_pixels)
        return shrink_patches(patch[None], self.input_size)[0] if self.patch_size != self.input_size else patch

    def pixels(self, image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """One image decoded as the model sees colour (gray or RGB), at its own size: what
        sliding-window inspection cuts its windows from."""
        return to_pixels(image, self.channels, max_pixels)

    def predict_images(self, images: Iterable, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Full-size images (bytes, PIL images or arrays, any mix) -> (N, K) class probabilities."""
        patches = [self.prepare(im, max_pixels) for im in images]
        if not patches:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.predict_proba(np.stack(patches))

    def predict_proba(self, patches: np.ndarray) -> np.ndarray:
        """(N, size, size[, C]) uint8 patches (at the input size, or at the patch size the model
        was trained from) -> (N, K) class probabilities."""
        patches = np.asarray(patches)
        if patches.ndim == 3 and self.channels == 1:
            patches = patches[..., None]
        if patches.ndim == 4 and patches.shape[1] == patches.shape[2] == self.patch_size != self.input_size:
            patches = shrink_patches(patches, self.input_size)
        expected = (self.input_size, self.input_size, self.channels)
        if patches.ndim != 4 or patches.shape[1:] != expected:
            raise ValueError(f"model {self.version} expects patches of shape (N, {expected}), got {patches.shape}")
        if len(patches) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate([self._views(patches[lo:lo + CHUNK]) for lo in range(0, len(patches), CHUNK)])

    def _views(self, chunk: np.ndarray) -> np.ndarray:
        if self.views == 1:
            return self._predict(chunk)
        views = dihedral_views(chunk, self.views)
        return np.mean([self._predict(v) for v in views], axis=0).astype(np.float32)

    def warm(self, batch_sizes: Sequence[int] = (1, 8)) -> None:
        """Run the model once per batch size (a compiled path traces then), and refuse a model
        whose output is misshaped or not finite."""
        for n in batch_sizes:
            p = self.predict_proba(np.full((n, *self.input_shape), 128, np.uint8))
            if p.shape != (n, len(self.classes)) or not np.isfinite(p).all():
                raise ValueError(f"model {self.version} gave {p.shape} non-finite or misshaped probabilities")


class LinearScorer(Scorer):
    """A linear head on frozen backbone features. Its parts are exposed so an ensemble of heads
    on one backbone runs the backbone once per image (``shared_features``), and so its heatmap is
    the exact decomposition of the head's logit over the backbone's locations (``explain``)."""

    def __init__(self, card: ModelCard | dict, features: Callable[[np.ndarray], np.ndarray], linear,
                 compiled: bool = False,
                 macs: int | None = None):
        super().__init__(card, lambda x: linear.predict_proba(features(x)), compiled, macs)
        self.features, self.linear = features, linear
        self._maps = None

    @property
    def feature_key(self) -> str:
        """Equal for two heads whose features are the same numbers (same backbone, input, views)."""
        import json

        return json.dumps([self.card.features.to_dict(), self.card.input.to_dict(), self.views], sort_keys=True)

    def view_features(self, patches: np.ndarray) -> list[np.ndarray]:
        """The features of each test-time view of (N, size, size, C) patches."""
        return [self.features(v) for v in dihedral_views(patches, self.views)]

    def head(self, view_features: list[np.ndarray]) -> np.ndarray:
        return np.mean([self.linear.predict_proba(f) for f in view_features], axis=0).astype(np.float32)

    def explain(self, patch: np.ndarray) -> tuple[float, np.ndarray]:
        """(defect probability, (size, size) map): each backbone location's share of the head's
        defect logit, exact for mean- and max-pooled stage features (a mean-pooled channel gives
        every location w * a / (h * w), a max-pooled one gives its arg-max location w * max),
        each stage's map upsampled to the patch. Views: the maps of each view turned back and
        averaged."""
        from defect_assets.ml.saliency import linear_stage_map

        if self._maps is None:
            from defect_assets.ml.backbone import make_extractor

            self._maps = make_extractor(self.card.features.to_dict(), (self.input_size, self.input_size, self.channels),
                                        maps=True)
        x = np.asarray(patch)
        if x.ndim == 2:
            x = x[..., None]
        heat = np.zeros(x.shape[:2], np.float64)
        for k, view in enumerate(dihedral_views(x[None], self.views)):
            m = linear_stage_map(self._maps, self.linear, view[0], self.classes)
            heat += undo_view(m, k, self.views)
        defect = float(self.predict_proba(x[None])[0, -1])
        return defect, heat / self.views


def undo_view(a: np.ndarray, k: int, views: int) -> np.ndarray:
    """Map a (H, W) array computed on view ``k`` of ``dihedral_views`` back onto the original."""
    turns = [0] if views in (1, 2) else [0, 1, 2, 3]
    n = len(turns)
    if k >= n:  # a mirrored view: mirror back first
        a, k = np.flip(a, axis=1), k - n
    return np.rot90(a, -turns[k], axes=(0, 1))


def _graph(model, size: int, channels: int) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` traced once for any batch size, uint8 in: one call releases the GIL once
    instead of once per layer (eager Keras spends milliseconds of Python per call)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(tf.cast(x, tf.float32), training=False),
                          input_signature=[tf.TensorSpec([None, size, size, channels], tf.uint8)])
    return lambda x: np.asarray(forward(np.ascontiguousarray(x, dtype=np.uint8))).astype(np.float32)


ScorerLoader = Callable[[ModelCard, Callable[[str], bytes], bool, Callable[[str], Scorer] | None], Scorer]
"""(card, read_file, compiled, load_version) -> Scorer: builds the scorer of one kind of card from a
reader of the version's (already verified) files; ``load_version`` loads another registered version
the same way (an ensemble's members)."""


def _load_keras(card: ModelCard, read_file: Callable[[str], bytes], compiled: bool, load_version) -> Scorer:
    from defect_assets.ml.training import model_from_bytes, predict_proba

    size, channels = int(card.input.size), int(card.input.channels)
    model = model_from_bytes(read_file(KERAS_FILE))
    if compiled:
        return Scorer(card, _graph(model, size, channels), compiled=True, macs=keras_macs(model))
    return Scorer(card, lambda x: predict_proba(model, x), macs=keras_macs(model))


def _load_linear(card: ModelCard, read_file: Callable[[str], bytes], compiled: bool, load_version) -> Scorer:
    from defect_assets.ml.backbone import extract_features, is_onnx, make_extractor
    from defect_assets.ml.linear import LinearSoftmax

    size, channels = int(card.input.size), int(card.input.channels)
    linear = LinearSoftmax.from_bytes(read_file(LINEAR_FILE))
    fx = make_extractor(card.features.to_dict(), (size, size, channels))
    if is_onnx(fx):  # ONNX Runtime: one compiled graph already, the same call in every process
        features = lambda x: extract_features(fx, x, batch_size=16)  # noqa: E731
    else:
        features = _graph(fx, size, channels) if compiled else (lambda x: extract_features(fx, x))
    return LinearScorer(card, features, linear, compiled=compiled, macs=None if is_onnx(fx) else keras_macs(fx))


MEMBERS_FILE = "members.json"


def _load_ensemble(card: ModelCard, read_file: Callable[[str], bytes], compiled: bool, load_version) -> Scorer:
    import json

    if load_version is None:
        raise ValueError(f"ensemble {card.version}: its members are loaded from a registry (load_registered)")
    doc = json.loads(read_file(MEMBERS_FILE))
    members = [load_version(v) for v in doc["members"]]
    weights = np.asarray(doc["weights"], np.float64)
    if len(weights) != len(members):
        raise ValueError(f"ensemble {card.version}: {len(members)} members but {len(weights)} weights")
    return EnsembleScorer(card, members, weights, compiled=compiled)


def _load_anomaly(card: ModelCard, read_file: Callable[[str], bytes], compiled: bool, load_version) -> Scorer:
    from defect_assets.ml.patchcore import load_anomaly  # imports this module: loaded when first needed

    return load_anomaly(card, read_file, compiled, load_version)


# the kinds every process knows, the service included (it never imports the family registry, so a
# kind registered only there could be trained and chosen as champion, then refused by the service)
_SCORER_KINDS: dict[str, ScorerLoader] = {"keras": _load_keras, "features+linear": _load_linear,
                                          "ensemble": _load_ensemble, "anomaly": _load_anomaly}


def register_scorer_kind(kind: str, loader: ScorerLoader) -> None:
    """Teach the loader a new card ``kind`` (a model family with its own kind of artifact registers
    one through ``pipeline.family_registry.register_family``). A kind is registered once."""
    if kind in _SCORER_KINDS and _SCORER_KINDS[kind] is not loader:
        raise ValueError(f"a scorer for model kind {kind!r} is already registered")
    _SCORER_KINDS[kind] = loader


def scorer_kinds() -> tuple[str, ...]:
    """The card kinds the loader knows."""
    return tuple(_SCORER_KINDS)


def load_scorer(card: ModelCard | dict, read_file: Callable[[str], bytes], compiled: bool = False,
                load_version: Callable[[str], Scorer] | None = None) -> Scorer:
    """A scorer from a card and a reader of the version's (already verified) files."""
    card = ModelCard.from_dict(card)
    kind = card.kind
    loader = _SCORER_KINDS.get(kind)
    if loader is None:
        raise ValueError(f"unknown model kind {kind!r} in card of {card.version}")
    return loader(card, read_file, compiled, load_version)


def load_registered(registry: ModelSource, version: str, compiled: bool = False) -> Scorer:
    """The registered model ``version``, every file checked against the hash in its card. An
    ensemble loads each of its members the same way and averages them with its weights."""
    card = registry.card(version)
    return load_scorer(card, lambda name: registry.read_file(version, name), compiled,
                       lambda member: load_registered(registry, member, compiled))


def load_keras_registered(registry: ModelSource, version: str):
    """The Keras model of registered ``version`` itself (hash-checked, ``safe_mode=True``): what a
    warm start continues training from."""
    from defect_assets.ml.training import model_from_bytes

    return model_from_bytes(registry.read_file(version, KERAS_FILE))


class EnsembleScorer(Scorer):
    """The weighted average of its members' probabilities (heads on one backbone share its pass)."""

    def __init__(self, card: ModelCard | dict, members: list[Scorer], weights: np.ndarray, compiled: bool = False):
        def predict(x: np.ndarray) -> np.ndarray:
            return ensemble_proba(members, weights, x)

        super().__init__(card, predict, compiled)
        self.members, self.weights = members, weights

    @property
    def cost(self) -> int:
        return sum(m.cost for m in self.members)  # an upper bound: heads on one backbone share its pass

    @property
    def explainable(self) -> bool:
        return any(isinstance(m, LinearScorer) and m.patch_size == self.patch_size for m in self.members)

    def explain(self, patch: np.ndarray) -> tuple[float, np.ndarray]:
        """The weighted maps of the members that have exact ones (linear heads on backbone
        features at the ensemble's patch size): where the ensemble's feature-based evidence lies."""
        heat = None
        for m, w in zip(self.members, self.weights):
            if isinstance(m, LinearScorer) and m.patch_size == self.patch_size and w > 0:
                part = w * m.explain(patch)[1]
                heat = part if heat is None else heat + part
        if heat is None:
            raise ValueError(f"ensemble {self.version} has no member with a feature map")
        return float(self.predict_proba(np.asarray(patch)[None])[0, -1]), heat


def explainable(scorer: Scorer) -> bool:
    """Whether ``scorer.explain`` gives an exact map (a linear head on backbone features, or a scorer
    whose score is its map's maximum: ``exact_map``, the anomaly family's)."""
    if getattr(scorer, "exact_map", False):
        return True
    if isinstance(scorer, EnsembleScorer):
        return scorer.explainable
    return isinstance(scorer, LinearScorer) and scorer.card.features.backbone != "vgg16"


def weighted_average(weights: np.ndarray, probas: np.ndarray) -> np.ndarray:
    """Members' probabilities stacked as (members, N, K), averaged with ``weights`` (members,): (N, K)."""
    return np.tensordot(weights, probas, axes=1)


def ensemble_proba(members: Sequence[Scorer], weights: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """An ensemble's probabilities: the weighted average of its members' (``shared_predictions``), float32."""
    return weighted_average(weights, np.stack(shared_predictions(members, patches))).astype(np.float32)


def shared_predictions(members: Sequence[Scorer], patches: np.ndarray) -> list[np.ndarray]:
    """Each member's probabilities for the same patches; linear heads on the same backbone
    features share one backbone pass (per test-time view) instead of one each, and an anomaly
    model on that backbone computes those features in its own pass (``shares_backbone_with``)."""
    features: dict[str, list[np.ndarray]] = {}
    done: dict[int, np.ndarray] = {}
    for i, m in enumerate(members):
        if not hasattr(m, "shares_backbone_with"):
            continue
        head = next((h for h in members if isinstance(h, LinearScorer) and h.feature_key not in features
                     and m.shares_backbone_with(h)), None)
        if head is not None and len(patches):
            x = np.asarray(patches)
            done[i], f = m.predict_with_features(x[..., None] if x.ndim == 3 else x, head)
            features[head.feature_key] = [f]
    out = []
    for i, m in enumerate(members):
        if i in done:
            out.append(done[i])
        elif isinstance(m, LinearScorer) and m.patch_size == m.input_size:
            key = m.feature_key
            if key not in features:
                x = np.asarray(patches)
                features[key] = m.view_features(x[..., None] if x.ndim == 3 else x)
            out.append(m.head(features[key]))
        else:
            out.append(m.predict_proba(patches))
    return out


def load_served(registry, version: str, runtime: str = "tensorflow") -> Scorer:
    """The served scorer of ``version``: the registered artifact, compiled (``tensorflow``), or its
    export bundle on ``onnxruntime`` / ``openvino``, behind the same ``Scorer`` interface (the
    exported_model parity check is what shows the two agree)."""
    if runtime == "tensorflow":
        return load_registered(registry, version, compiled=True)
    from defect_assets.ml.export import exported_scorer

    return exported_scorer(registry, version, runtime)
