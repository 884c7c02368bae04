"""The scoring web service: ``create_app(settings)`` builds the FastAPI application from its
routers (``routes/``: health, model, scoring, labeling, annotations and dashboard for the JSON
API, each with a ``response_model`` from ``schemas``; pages for the HTML pages), the body guard
(``guard``: one middleware, one cap per group of routes), the error handlers and the static
files of its pages (served by the app itself: no CDN, works offline). What routes depend on
(the state, the store, the model, who is asking) is ``dependencies``; no router imports another.

Routes: POST /v1/predict (one or many images), POST /v1/inspect (a large photo: windows,
heatmap, located defects), GET /v1/model (version, metrics, lineage), GET /healthz (alive),
GET /readyz (a model is loaded and warmed), /openapi.json (no /docs or /redoc:
FastAPI loads their Swagger UI and ReDoc from a CDN, and nothing here comes from one); the labeling page at
/label with its API under /v1/labeling (labeler token; ``routes/labeling.py``), the annotation
view at /annotate with its API under /v1/annotations (the same token; ``routes/annotations.py``),
the classify-one-image page at /classify, /static/;
GET /dashboard (the analysts' page, its data at /dashboard/api/summary). Every scored image is
appended to the prediction log (buffered; ``storage.prediction_log``) unless the settings turn
it off.

Every image is prepared by the served ``Scorer`` (the preprocessing training used), so the
service sees what the trained model saw. Every error is JSON ``{"error", "detail"}`` with a
4xx status for anything the client sent: 413 over the byte or image cap, 415 for a body that
is not multipart or a part that is not an image type, 422 for an image that cannot be decoded
(corrupt, truncated, not an image, over the pixel cap, a decompression bomb), 401 for a
missing or wrong API key. 503 means no model is loaded yet. The service imports no Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from defect_assets.serving.access_log import install_access_log_redaction
from defect_assets.serving.annotation import AnnotationDesk
from defect_assets.serving.batching import MicroBatcher
from defect_assets.serving.errors import install_error_handlers
from defect_assets.serving.guard import WRITE_TOO_LARGE, BodyCap, BodyGuard
from defect_assets.serving.labeling import LabelingDesk
from defect_assets.serving.models import ModelHolder
from defect_assets.serving.routes import annotations, dashboard, health, labeling, model, pages, practice, scoring
from defect_assets.serving.settings import ServiceSettings
from defect_assets.serving.state import ServiceState
from defect_assets.storage.prediction_log import PredictionLog
from defect_assets.storage.registry import ModelRegistry

log = logging.getLogger("defect_assets.serving")
STATIC = Path(__file__).resolve().parent / "static"


def refresh_production(state: ServiceState) -> None:
    """Swap in the production model if its pointer changed (in the loader thread): ``ModelHolder.refresh``
    loads it through ``ml.scorer.load_served``."""
    if state.holder.refresh() and state.settings.freeze_gc:
        # TensorFlow and Keras leave ~10^6 long-lived objects; full collections walking them
        # stalled requests for ~0.3 s. Freeze them out of the collector's sight, after one
        # full collection per swap (which also frees the cycles of a model swapped out).
        gc.unfreeze()
        gc.collect()
        gc.freeze()


async def poll_production(state: ServiceState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(state.loader, refresh_production, state)
        except Exception:  # noqa: BLE001 - refresh already logs; never let the poller die
            log.exception("model reload poll failed")
        await asyncio.sleep(state.settings.reload_seconds)


def create_app(settings: ServiceSettings) -> FastAPI:
    state = ServiceState(settings=settings,
                         holder=ModelHolder(ModelRegistry(settings.store), warm_batch=min(settings.max_batch, 64),
                                            runtime=settings.runtime),
                         batcher=MicroBatcher(settings.max_batch, settings.max_wait_ms),
                         loader=ThreadPoolExecutor(max_workers=1, thread_name_prefix="defect-loader"),
                         labeling=LabelingDesk(settings.store),
                         annotation=AnnotationDesk(settings.store, settings.mark_classes),
                         predictions=PredictionLog(settings.store, settings.prediction_log_flush_seconds)
                         if settings.prediction_log else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        install_access_log_redaction()  # here: after the server has configured its loggers
        state.batcher.start()
        if state.predictions is not None:
            state.predictions.start()
        poller = asyncio.get_running_loop().create_task(poll_production(state), name="production-poller")
        if not settings.api_key:
            log.warning("no API key set (DEFECT_ASSETS_API_KEY): every route is open")
        log.info("labeling page at /label for %d labeler(s)%s", len(settings.labelers),
                 "" if settings.labelers else " (off: set DEFECT_ASSETS_LABELER_TOKENS)")
        yield
        poller.cancel()
        await state.batcher.stop()
        if state.predictions is not None:
            await asyncio.to_thread(state.predictions.close)  # the last records, before the process ends
        state.loader.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="defect_assets scoring service",
        version="1",
        description="Scores images with the production model of the defect_assets registry. Errors are JSON "
                    "{error, detail}; every prediction names the model version that made it.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc pages load their scripts and fonts from a CDN: off
        redoc_url=None,
    )
    app.state.service = state
    app.add_middleware(BodyGuard, caps=(
        BodyCap(settings.max_upload_bytes, paths=scoring.UPLOAD_ROUTES, multipart=True,
                timeout=settings.body_timeout_seconds),
        BodyCap(labeling.MAX_WRITE_BYTES, prefixes=labeling.WRITE_PREFIXES, too_large=WRITE_TOO_LARGE),
        BodyCap(annotations.MAX_WRITE_BYTES, prefixes=annotations.WRITE_PREFIXES, too_large=WRITE_TOO_LARGE)))
    install_error_handlers(app)
    for router in (health.router, model.router, scoring.router, labeling.router, practice.router, annotations.router,
                   pages.router, dashboard.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
