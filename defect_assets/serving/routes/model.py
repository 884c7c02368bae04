"""The served model: version, classes, threshold, metrics and data lineage."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from defect_assets.serving.dependencies import require_key, served_model, service
from defect_assets.serving.errors import jsonable
from defect_assets.serving.models import ServedModel
from defect_assets.serving.schemas import ERROR_RESPONSES, ModelInfo
from defect_assets.serving.state import ServiceState

router = APIRouter(tags=["model"])


@router.get("/v1/model", response_model=ModelInfo, dependencies=[require_key("model")], responses=ERROR_RESPONSES)
async def model_info(state: ServiceState = Depends(service), m: ServedModel = Depends(served_model)):
    """The served model: version, classes, threshold, validation (and test) metrics, and the
    data lineage (batches and label versions) from its card."""
    card = m.card
    decision = (f"{m.classes[1]} when p({m.classes[1]}) >= {m.threshold:.4f}" if m.binary
                else "the most probable class (arg-max)")
    return jsonable({
        "model_version": m.version, "family": card.family, "task": card.task,
        "classes": m.classes, "input": card.input.to_dict(), "threshold": m.threshold, "decision": decision,
        "promoted": m.pointer.get("promoted"), "loaded_at": m.loaded_at, "created": card.created,
        "validation": card.validation.to_dict() if card.validation else {}, "test": m.pointer.get("test_metrics"),
        "data_version": card.data_version.to_dict() if card.data_version else {}, "config": card.config,
        "last_reload_error": state.holder.last_error, "reloads": state.holder.reloads,
        "batching": state.batcher.stats(),
        "prediction_log": state.predictions.status() if state.predictions is not None else None})
