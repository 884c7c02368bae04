"""One way to score patches with any registered model: the small inferencer that evaluation,
the champion checks and the scoring service all import. ``load_scorer`` needs only the card
and a way to read the version's files; Keras models load with safe_mode=True."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

KERAS_FILE = "model.keras"
LINEAR_FILE = "linear.npz"


class Scorer:
    def __init__(self, card: dict, predict: Callable[[np.ndarray], np.ndarray]):
        self.card = card
        self._predict = predict

    @property
    def version(self) -> str:
        return self.card["version"]

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def input_size(self) -> int:
        return int(self.card["input"]["size"])

    @property
    def channels(self) -> int:
        return int(self.card["input"]["channels"])

    def predict_proba(self, patches: np.ndarray) -> np.ndarray:
        """(N, size, size[, C]) uint8 patches -> (N, K) class probabilities."""
        patches = np.asarray(patches)
        if patches.ndim == 3 and self.channels == 1:
            patches = patches[..., None]
        expected = (self.input_size, self.input_size, self.channels)
        if patches.ndim != 4 or patches.shape[1:] != expected:
            raise ValueError(f"model {self.version} expects patches of shape (N, {expected}), got {patches.shape}")
        return self._predict(patches)


def load_scorer(card: dict, read_file: Callable[[str], bytes]) -> Scorer:
    kind = card.get("kind")
    if kind == "keras":
        from defect_assets.ml.training import model_from_bytes, predict_proba

        model = model_from_bytes(read_file(KERAS_FILE))
        return Scorer(card, lambda x: predict_proba(model, x))
    if kind == "features+linear":
        from defect_assets.ml.backbone import extract_features, feature_extractor
        from defect_assets.ml.linear import LinearSoftmax

        linear = LinearSoftmax.from_bytes(read_file(LINEAR_FILE))
        size, ch = int(card["input"]["size"]), int(card["input"]["channels"])
        fx = feature_extractor((size, size, ch), tuple(card["features"]["blocks"]), card["features"]["weights"])
        return Scorer(card, lambda x: linear.predict_proba(extract_features(fx, x)))
    raise ValueError(f"unknown model kind {kind!r} in card of {card.get('version')}")
