"""The model the service scores with, and its hot reload.

``ServedModel`` is one immutable thing: a loaded and warmed ``Scorer`` plus the production
pointer document it came from (version, the champion's threshold). ``ModelHolder`` keeps one
reference to the current ServedModel; a request takes that reference once when it starts, so
it finishes on the model it started with even if a new one is swapped in meanwhile.

``ModelHolder.refresh`` polls the registry's production pointer; a new pointer is loaded
through the one inference seam (``ml.scorer.load_registered``: hash-checked, ``safe_mode=True``,
its compiled fast path) and warmed beside the old model, then swapped in by one assignment. A
load that fails for any reason (a corrupt copy, a Keras error, an unreadable store) keeps the
old model serving and is logged and reported on /v1/model; the same pointer is not retried
until it changes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from defect_assets.ml.labels import is_defect_label
from defect_assets.ml.records import ModelCard
from defect_assets.ml.scorer import Scorer, load_served
from defect_assets.storage.registry import ModelRegistry

log = logging.getLogger("defect_assets.serving")

DEFAULT_THRESHOLD = 0.5


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class FirstUse:
    """True for exactly one caller: the first request answered after a model load (it pays what
    warming did not cover; the prediction log marks it so latency percentiles leave it out)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._taken = False

    def take(self) -> bool:
        with self._lock:
            first, self._taken = not self._taken, True
            return first


@dataclass(frozen=True)
class ServedModel:
    scorer: Scorer
    pointer: dict
    loaded_at: str = field(default_factory=_now)
    first_use: FirstUse = field(default_factory=FirstUse, compare=False, repr=False)
    """Taken by the first logged request on this load (a new threshold on the same scorer keeps it)."""

    @property
    def version(self) -> str:
        return self.scorer.version

    @property
    def card(self) -> ModelCard:
        return self.scorer.card

    @property
    def classes(self) -> list[str]:
        return self.scorer.classes

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def threshold(self) -> float | None:
        """The production threshold on the defect probability (binary cards); None: arg-max."""
        if not self.binary:
            return None
        value = self.pointer.get("threshold")
        try:
            value = float(value)
        except (TypeError, ValueError):
            return DEFAULT_THRESHOLD
        return value if math.isfinite(value) else DEFAULT_THRESHOLD

    @property
    def pointer_key(self) -> str:
        return json.dumps(self.pointer, sort_keys=True, default=str)

    def defect_score(self, proba: np.ndarray) -> np.ndarray:
        """Probability of any defect class: column 1 of a binary card, else the sum over the
        classes whose names are defects (ok/background/... are not)."""
        if self.binary:
            return proba[:, 1]
        mask = np.array([is_defect_label(c) for c in self.classes])
        return proba[:, mask].sum(axis=1) if mask.any() else 1 - proba[:, 0]

    def decide(self, proba: np.ndarray) -> list[tuple[str, bool]]:
        """(decision, is_defect) per row: the defect class at the threshold, or the arg-max class."""
        if self.binary:
            hit = proba[:, 1] >= self.threshold
            return [(self.classes[int(h)], bool(h)) for h in hit]
        names = [self.classes[int(i)] for i in proba.argmax(axis=1)]
        return [(n, is_defect_label(n)) for n in names]


class ModelHolder:
    """The current ServedModel (or None before the first successful load) and the reload logic."""

    def __init__(self, registry: ModelRegistry, warm_batch: int = 8, runtime: str = "tensorflow"):
        self.registry = registry
        self.runtime = runtime
        self.warm_batch = warm_batch
        self.current: ServedModel | None = None
        self.last_error: dict | None = None
        self.reloads = 0
        self._failed_key: str | None = None
        self._lock = threading.Lock()  # one load at a time (poller and an explicit refresh)

    def refresh(self) -> bool:
        """Load the production model if the pointer changed; True when a new one was swapped in."""
        with self._lock:
            try:
                doc = self.registry.production()
            except Exception as e:  # noqa: BLE001 - a flaky store must not take the service down
                self._failed("(pointer)", None, f"cannot read the production pointer: {e}")
                return False
            if doc is None:
                return False
            key = json.dumps(doc, sort_keys=True, default=str)
            old = self.current
            if (old is not None and old.pointer_key == key) or key == self._failed_key:
                return False
            version = str(doc.get("version"))
            t0 = time.perf_counter()
            try:
                if old is not None and old.version == version:
                    scorer = old.scorer  # same artifact, new threshold or metadata
                else:
                    scorer = load_served(self.registry, version, self.runtime)  # only ml/ loads models
                    scorer.warm((1, self.warm_batch))
            except Exception as e:  # noqa: BLE001 - any failure keeps the old model serving
                self._failed(version, key, f"{type(e).__name__}: {e}")
                return False
            same_load = old is not None and scorer is old.scorer
            # the swap: one reference assignment
            self.current = ServedModel(scorer, doc, first_use=old.first_use) if same_load else ServedModel(scorer, doc)
            self.reloads += 1
            self.last_error = None
            log.info("serving model %s (threshold %s), loaded and warmed in %.2fs%s", version,
                     self.current.threshold, time.perf_counter() - t0,
                     f"; replaced {old.version}" if old is not None else "")
            return True

    def _failed(self, version: str, key: str | None, reason: str) -> None:
        if key is not None:
            self._failed_key = key
        self.last_error = {"version": version, "error": reason, "at": _now()}
        keeping = f"keeping {self.current.version}" if self.current else "no model is being served"
        log.error("could not load model %s: %s; %s", version, reason, keeping)
