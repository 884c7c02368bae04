"""Liveness and readiness: what an orchestrator polls."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from defect_assets.serving.dependencies import service
from defect_assets.serving.errors import error_response
from defect_assets.serving.schemas import ErrorResponse, Health, Ready
from defect_assets.serving.state import ServiceState

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
async def healthz():
    """Alive: the process answers (it may still be loading its model)."""
    return {"status": "alive"}


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorResponse}})
async def readyz(state: ServiceState = Depends(service)):
    """Ready: a production model is loaded and warmed. Stays ready on the old model when a
    reload fails (the failure is shown in last_reload_error)."""
    model = state.holder.current
    if model is None:
        why = state.holder.last_error["error"] if state.holder.last_error else "no production model in the registry yet"
        return error_response(503, "not_ready", why)
    return {"status": "ready", "model_version": model.version, "last_reload_error": state.holder.last_error}
