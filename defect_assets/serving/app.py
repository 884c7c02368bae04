"""The scoring web service: ``create_app(settings)`` builds the FastAPI application.

Routes: POST /v1/predict (one or many images), POST /v1/inspect (a large photo: windows,
heatmap, located defects), GET /v1/model (version, metrics, lineage), GET /healthz (alive),
GET /readyz (a model is loaded and warmed), /docs and /openapi.json.

Every image goes through ``prepare_patch`` / ``to_pixels``, the preprocessing training used,
so the service sees what the trained model saw. Every error is JSON ``{"error", "detail"}``
with a 4xx status for anything the client sent: 413 over the byte or image cap, 415 for a body
that is not multipart or a part that is not an image type, 422 for an image that cannot be
decoded (corrupt, truncated, not an image, over the pixel cap, a decompression bomb), 401 for a
missing or wrong API key. 503 means no model is loaded yet.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hmac
import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from defect_assets.ml.images import ImageRejected, encode_png, sha256_bytes
from defect_assets.ml.labels import is_defect_label
from defect_assets.ml.preprocess import prepare_patch, to_pixels
from defect_assets.serving import inspection
from defect_assets.serving.batching import MicroBatcher
from defect_assets.serving.models import ModelHolder, ServedModel
from defect_assets.serving.schemas import ErrorResponse, Health, InspectResponse, ModelInfo, PredictResponse, Ready
from defect_assets.serving.settings import API_KEY_HEADER, ServiceSettings
from defect_assets.serving.uploads import Part, TooManyParts, UploadError, file_schema, parse_multipart
from defect_assets.storage.registry import ModelRegistry

log = logging.getLogger("defect_assets.serving")

UPLOAD_ROUTES = ("/v1/predict", "/v1/inspect")
INLINE_DECODE_BYTES = 256 * 1024  # smaller uploads are decoded on the event loop (a thread hop costs more)
HEATMAP_MAX_PIXELS = 4_000_000
IMAGE_TYPES = ("image/", "application/octet-stream")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def error_response(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def jsonable(value):
    """Card values as strict JSON: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class UploadGuard:
    """ASGI middleware for the upload routes: refuses a body that is not multipart (415) or is
    larger than the cap (413), before reading it when Content-Length says so, else as soon as
    the streamed bytes pass the cap; a body that stops arriving is answered 408 (never a hang)."""

    class _Abort(Exception):
        pass

    def __init__(self, app, max_bytes: int, body_timeout: float):
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_ROUTES:
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope["headers"]}
        ctype = headers.get(b"content-type", b"").decode("latin-1").strip().lower()
        if not ctype.startswith("multipart/form-data"):
            shown = ctype.split(";")[0][:80] or "none"
            return await error_response(415, "unsupported_media_type",
                                        f"send the images as multipart/form-data, not {shown}")(scope, receive, send)
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > self.max_bytes:
            return await self._too_large(scope, receive, send, declared)
        seen, abort, started = 0, None, False

        async def counted_receive():
            nonlocal seen, abort
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                abort = (408, "request_timeout", f"the upload stalled for {self.body_timeout:.0f}s")
                raise self._Abort() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    abort = (413, "payload_too_large",
                             f"the upload is over the cap of {self.max_bytes:,} bytes (got at least {seen:,})")
                    raise self._Abort()
            return message

        async def guarded_send(message):
            nonlocal started
            if abort:
                return  # the app's own reaction to the aborted body is replaced by the answer below
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not abort:
                raise
        if abort and not started:
            await error_response(*abort)(scope, receive, send)

    async def _too_large(self, scope, receive, send, n: int):
        await error_response(413, "payload_too_large",
                             f"the upload is over the cap of {self.max_bytes:,} bytes (got at least {n:,})")(scope, receive, send)


def create_app(settings: ServiceSettings) -> FastAPI:
    holder = ModelHolder(ModelRegistry(settings.store), warm_batch=min(settings.max_batch, 64))
    batcher = MicroBatcher(settings.max_batch, settings.max_wait_ms)
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="defect-loader")

    def reload() -> None:
        if holder.refresh() and settings.freeze_gc:
            # TensorFlow and Keras leave ~10^6 long-lived objects; full collections walking them
            # stalled requests for ~0.3 s. Freeze them out of the collector's sight, after one
            # full collection per swap (which also frees the cycles of a model swapped out).
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    async def poll_production() -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(loader, reload)
            except Exception:  # noqa: BLE001 - refresh already logs; never let the poller die
                log.exception("model reload poll failed")
            await asyncio.sleep(settings.reload_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        poller = asyncio.get_running_loop().create_task(poll_production(), name="production-poller")
        if not settings.api_key:
            log.warning("no API key set (DEFECT_ASSETS_API_KEY): every route is open")
        yield
        poller.cancel()
        await batcher.stop()
        loader.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="defect_assets scoring service",
        version="1",
        description="Scores images with the production model of the defect_assets registry. Errors are JSON "
                    "{error, detail}; every prediction names the model version that made it.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.holder, app.state.batcher = settings, holder, batcher
    app.add_middleware(UploadGuard, max_bytes=settings.max_upload_bytes, body_timeout=settings.body_timeout_seconds)

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="the service's API key (DEFECT_ASSETS_API_KEY)")
    expected = (settings.api_key or "").encode()

    def require_key(key: str | None = Security(key_header)) -> None:
        # compare_digest on bytes: constant time, and no TypeError on non-ASCII input
        if key is None or not hmac.compare_digest(key.encode(), expected):
            raise ApiError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header")

    def guard(route: str) -> list:
        return [Depends(require_key)] if settings.protects(route) else []

    errors = {s: {"model": ErrorResponse} for s in (401, 413, 415, 422, 503)}

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        # loc + message only: never echo the submitted values
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                           for e in exc.errors())
        return error_response(422, "invalid_request", detail or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        from http import HTTPStatus

        try:
            code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "http_error"
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error; the service log has the details")

    def serving() -> ServedModel:
        model = holder.current
        if model is None:
            why = f" (last load failed: {holder.last_error['error']})" if holder.last_error else ""
            raise ApiError(503, "not_ready", f"no model is loaded yet{why}; see /readyz")
        return model

    async def uploaded(request: Request, field: str, most: int) -> list[Part]:
        """The image parts named ``field`` (415 for a non-image type, 413 over ``most``, 422 for none)."""
        try:
            parts = parse_multipart(await request.body(), request.headers.get("content-type", ""), most + 16)
        except TooManyParts as e:
            raise ApiError(413, "too_many_images", str(e)) from None
        except UploadError as e:
            raise ApiError(400, "bad_multipart", str(e)) from None
        files = [p for p in parts if p.name == field]
        if not files:
            raise ApiError(422, "invalid_request", f"no file in the form field {field!r}")
        if len(files) > most:
            raise ApiError(413, "too_many_images", f"{len(files)} images in one request; the cap is {most}")
        for i, p in enumerate(files):
            if p.content_type and not p.content_type.startswith(IMAGE_TYPES):
                raise ApiError(415, "unsupported_media_type", f"file {i} ({p.filename or 'unnamed'}) is "
                               f"{p.content_type[:80]}; send image/* or application/octet-stream")
        return files

    def decode(fn, data: bytes, index: int, name: str | None, *args):
        try:
            return fn(data, *args)
        except Exception as e:  # noqa: BLE001 - undecodable input is the client's file, never a 5xx
            reason = str(e) if isinstance(e, ImageRejected) else f"cannot decode ({type(e).__name__}: {e})"
            raise ApiError(422, "image_rejected", f"file {index} ({name or 'unnamed'}): {reason}"[:500]) from None

    async def scored(model: ServedModel, patches: np.ndarray) -> np.ndarray:
        try:
            async with asyncio.timeout(settings.request_timeout_seconds):
                return await batcher.score(model, patches)
        except TimeoutError:
            raise ApiError(503, "timeout", f"scoring took over {settings.request_timeout_seconds:.0f}s") from None

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz():
        """Alive: the process answers (it may still be loading its model)."""
        return {"status": "alive"}

    @app.get("/readyz", response_model=Ready, tags=["service"], responses={503: {"model": ErrorResponse}})
    async def readyz():
        """Ready: a production model is loaded and warmed. Stays ready on the old model when a
        reload fails (the failure is shown in last_reload_error)."""
        model = holder.current
        if model is None:
            why = holder.last_error["error"] if holder.last_error else "no production model in the registry yet"
            return error_response(503, "not_ready", why)
        return {"status": "ready", "model_version": model.version, "last_reload_error": holder.last_error}

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"], dependencies=guard("model"), responses=errors)
    async def model_info():
        """The served model: version, classes, threshold, validation (and test) metrics, and the
        data lineage (batches and label versions) from its card."""
        m = serving()
        card = m.card
        decision = (f"{m.classes[1]} when p({m.classes[1]}) >= {m.threshold:.4f}" if m.binary
                    else "the most probable class (arg-max)")
        return JSONResponse(jsonable({
            "model_version": m.version, "family": card.get("family", ""), "task": card.get("task", ""),
            "classes": m.classes, "input": card.get("input", {}), "threshold": m.threshold, "decision": decision,
            "promoted": m.pointer.get("promoted"), "loaded_at": m.loaded_at, "created": card.get("created"),
            "validation": card.get("validation", {}), "test": m.pointer.get("test_metrics"),
            "data_version": card.get("data_version", {}), "config": card.get("config", {}),
            "last_reload_error": holder.last_error, "reloads": holder.reloads, "batching": batcher.stats()}))

    @app.post("/v1/predict", response_model=PredictResponse, tags=["model"], dependencies=guard("predict"),
              responses=errors, openapi_extra=file_schema("files", True, "one or more images (PNG, JPEG, BMP, TIFF)"))
    async def predict(request: Request):
        """Score whole images: each is turned into the model's input patch by the preprocessing
        training used, and scored in a micro-batch with concurrent requests."""
        model = serving()
        files = await uploaded(request, "files", settings.max_images)
        datas = [bytes(f.data) for f in files]
        names = [f.filename for f in files]
        size, channels = model.scorer.input_size, model.scorer.channels

        def prepare() -> np.ndarray:
            return np.stack([decode(prepare_patch, d, i, names[i], size, channels, settings.max_pixels)
                             for i, d in enumerate(datas)])

        x = prepare() if sum(map(len, datas)) <= INLINE_DECODE_BYTES else await asyncio.to_thread(prepare)
        proba = await scored(model, x)
        decisions, scores = model.decide(proba), model.defect_score(proba)
        classes = model.classes
        results = [{"filename": names[i], "sha256": sha256_bytes(d),
                    "probabilities": dict(zip(classes, map(float, proba[i]))),
                    "decision": decisions[i][0], "is_defect": decisions[i][1], "defect_score": float(scores[i]),
                    "model_version": model.version} for i, d in enumerate(datas)]
        return JSONResponse({"model_version": model.version, "threshold": model.threshold, "results": results})

    @app.post("/v1/inspect", response_model=InspectResponse, tags=["model"], dependencies=guard("inspect"),
              responses=errors, openapi_extra=file_schema("file", False, "a photo, larger than the model's input"))
    async def inspect(request: Request,
                      stride: int | None = Query(None, ge=1, le=4096, description="window step in pixels (default: a quarter window)"),
                      threshold: float | None = Query(None, ge=0, le=1, description="default: the production threshold"),
                      min_distance: float | None = Query(None, ge=0, le=100_000, description="pixels between located defects (default: one window)"),
                      heatmap: bool = Query(True, description="include the heatmap PNG")):
        """Score model-sized windows over a large photo (the dent workflow): defect probability
        per window, a heatmap PNG, and the defects located above the threshold."""
        model = serving()
        upload = (await uploaded(request, "file", 1))[0]
        data = bytes(upload.data)
        size, channels = model.scorer.input_size, model.scorer.channels
        pixels = await asyncio.to_thread(decode, to_pixels, data, 0, upload.filename, channels, settings.max_pixels)
        h, w = pixels.shape[:2]
        step = stride or max(1, size // 4)
        grid = inspection.window_grid(w, h, size, step)
        if grid.count > settings.max_windows:
            need = math.ceil(math.sqrt(w * h / settings.max_windows))
            raise ApiError(422, "too_many_windows", f"{w}x{h} at stride {step} gives {grid.count:,} windows, over the "
                                                    f"cap of {settings.max_windows:,}; use stride >= {need}")
        chunk = max(256, settings.max_batch)
        parts = []
        for lo in range(0, grid.count, chunk):  # one chunk at a time: predict requests interleave
            windows = inspection.cut_windows(pixels, grid, np.arange(lo, min(lo + chunk, grid.count)))
            parts.append(await scored(model, windows))
        proba = np.concatenate(parts)
        score = model.defect_score(proba)
        thr = threshold if threshold is not None else (model.threshold if model.threshold is not None else 0.5)
        found = inspection.locate(score, grid, thr, min_distance if min_distance is not None else float(size))
        kinds = [i for i, c in enumerate(model.classes) if is_defect_label(c)] or list(range(1, len(model.classes)))
        for d in found:
            window = d.pop("window")
            d["kind"] = model.classes[1] if model.binary else model.classes[max(kinds, key=lambda i: proba[window, i])]
        scale = max(1, math.ceil(math.sqrt(w * h / HEATMAP_MAX_PIXELS)))
        png = None
        if heatmap:
            img = await asyncio.to_thread(inspection.heatmap, score, grid, scale)
            png = base64.b64encode(await asyncio.to_thread(encode_png, img)).decode()
        return JSONResponse({
            "model_version": model.version, "sha256": sha256_bytes(data), "width": w, "height": h, "window": size,
            "stride": step, "windows": grid.count, "threshold": float(thr),
            "grid": {"columns": len(grid.xs), "rows": len(grid.ys), "x": grid.centers_x.tolist(),
                     "y": grid.centers_y.tolist()},
            "scores": np.round(score.reshape(grid.shape), 5).tolist(), "defects": found,
            "heatmap_png": png, "heatmap_scale": scale})

    return app
