"""What every route of the service shares: its settings, the model holder (hot reload), the
micro-batcher, the desks, the prediction log, and the API-key comparison. One ``ServiceState``
per app, reached by routes through ``dependencies.service``."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from defect_assets.serving.annotation import AnnotationDesk
from defect_assets.serving.batching import MicroBatcher
from defect_assets.serving.errors import ApiError
from defect_assets.serving.heavy import HeavyGate
from defect_assets.serving.labeling import LabelingDesk
from defect_assets.serving.models import ModelHolder, ServedModel
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.prediction_log import PredictionLog, new_record
from defect_assets.storage.sessions import SessionStore


@dataclass
class ServiceState:
    settings: ServiceSettings
    holder: ModelHolder
    batcher: MicroBatcher
    loader: ThreadPoolExecutor
    """One thread that loads models, so a reload never blocks the event loop."""
    labeling: LabelingDesk
    """The labeling page's queue and label events (in the same artifact store as the registry)."""
    annotation: AnnotationDesk | None = field(default=None)
    """The annotation view's batches, images and marks (same store)."""
    predictions: PredictionLog | None = field(default=None)
    """The buffered prediction log (None: not kept)."""

    def serving(self) -> ServedModel:
        """The model to answer with, or 503 when none is loaded yet."""
        model = self.holder.current
        if model is None:
            why = f" (last load failed: {self.holder.last_error['error']})" if self.holder.last_error else ""
            raise ApiError(503, "not_ready", f"no model is loaded yet{why}; see /readyz")
        return model

    heavy: HeavyGate | None = field(default=None)
    """The concurrency limit of the heavy routes (``serving.heavy``)."""
    sessions: SessionStore | None = field(default=None)
    """The labeling page's sign-in sessions (in the artifact store: shared by every replica)."""

    def __post_init__(self):
        if self.heavy is None:
            self.heavy = HeavyGate(self.settings.max_heavy_requests)
        if self.sessions is None:
            self.sessions = SessionStore(self.settings.store)

    async def score(self, model: ServedModel, patches: np.ndarray, background: bool = False) -> np.ndarray:
        """Class probabilities from the micro-batcher, or 503 past the request timeout."""
        timeout = self.settings.request_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await self.batcher.score(model, patches, background)
        except TimeoutError:
            raise ApiError(503, "timeout", f"scoring took over {timeout:.0f}s") from None


    def log_predictions(self, route: str, request_id: str, model: ServedModel, results: list[dict],
                        latency_ms: float) -> None:
        """One prediction-log record per scored image (a buffered append: no I/O here). The first
        request logged after a model load is marked ``warmup``."""
        if self.predictions is None:
            return
        warmup = model.first_use.take()
        self.predictions.add([new_record(request_id=request_id, route=route, model_version=model.version,
                                         sha256=r["sha256"], scores=r["probabilities"], decision=r["decision"],
                                         is_defect=r["is_defect"], defect_score=r["defect_score"],
                                         latency_ms=latency_ms, warmup=warmup) for r in results])

    def key_matches(self, key: str | None) -> bool:
        return self.settings.key_matches(key)
