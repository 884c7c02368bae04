"""Scoring: POST /v1/predict (whole images) and POST /v1/inspect (a large photo, windows,
heatmap, located defects). Every image is prepared by the served scorer (``ml.scorer``: the
preprocessing training used) and scored in micro-batches with concurrent requests."""

from __future__ import annotations

import asyncio
import base64
import math
import time
import uuid

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from defect_assets.ml.images import ImageRejected, encode_png, sha256_bytes
from defect_assets.ml.labels import is_defect_label
from defect_assets.serving import heavy, inspection
from defect_assets.serving.errors import ApiError
from defect_assets.serving.schemas import ERROR_RESPONSES, InspectResponse, PredictResponse
from defect_assets.serving.state import ServiceState, require_key, service
from defect_assets.serving.uploads import Part, TooManyParts, UploadError, file_schema, parse_multipart

UPLOAD_ROUTES = ("/v1/predict", "/v1/inspect")
INLINE_DECODE_BYTES = 256 * 1024  # smaller uploads are decoded on the event loop (a thread hop costs more)
HEATMAP_MAX_PIXELS = 4_000_000
IMAGE_TYPES = ("image/", "application/octet-stream")

router = APIRouter(tags=["model"])


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
    """``fn(data, *args)``; any failure is the client's file: 422 naming it, never a 5xx."""
    try:
        return fn(data, *args)
    except Exception as e:  # noqa: BLE001 - undecodable input is the client's file, never a 5xx
        reason = str(e) if isinstance(e, ImageRejected) else f"cannot decode ({type(e).__name__}: {e})"
        raise ApiError(422, "image_rejected", f"file {index} ({name or 'unnamed'}): {reason}"[:500]) from None


async def slide_windows(state: ServiceState, model, pixels: np.ndarray, step: int,
                        request: Request | None = None) -> tuple[inspection.WindowGrid, np.ndarray]:
    """The model's class probabilities for every model-sized window of a photo (422 over the
    window cap or the work budget; chunked, with a deadline and cancellation: ``serving.heavy``).
    Shared by /v1/inspect and the annotation view's suggestions; the caller holds a heavy slot."""
    h, w = pixels.shape[:2]
    size = model.scorer.patch_size  # windows as the model's patches were cut (it shrinks them if needed)
    grid = inspection.window_grid(w, h, size, step)
    if grid.count > state.settings.max_windows:
        need = math.ceil(math.sqrt(w * h / state.settings.max_windows))
        raise ApiError(422, "too_many_windows", f"{w}x{h} at stride {step} gives {grid.count:,} windows, over the "
                                                f"cap of {state.settings.max_windows:,}; use stride >= {need}")
    heavy.check_budget(grid, model.scorer.cost, state.settings.max_work_gmac, step)
    return grid, await heavy.score_windows(state, model, pixels, grid, request)


def locate_defects(model, proba: np.ndarray, grid: inspection.WindowGrid, threshold: float,
                   min_distance: float) -> list[dict]:
    """Defect centers above ``threshold`` (``inspection.locate``), each with the defect class its
    window scored highest."""
    found = inspection.locate(model.defect_score(proba), grid, threshold, min_distance)
    kinds = [i for i, c in enumerate(model.classes) if is_defect_label(c)] or list(range(1, len(model.classes)))
    for d in found:
        window = d.pop("window")
        d["kind"] = model.classes[1] if model.binary else model.classes[max(kinds, key=lambda i: proba[window, i])]
    return found


@router.post("/v1/predict", response_model=PredictResponse, dependencies=[require_key("predict")],
             responses=ERROR_RESPONSES,
             openapi_extra=file_schema("files", True, "one or more images (PNG, JPEG, BMP, TIFF)"))
async def predict(request: Request, state: ServiceState = Depends(service)):
    """Score whole images: each is turned into the model's input patch by the preprocessing
    training used, and scored in a micro-batch with concurrent requests."""
    t0 = time.perf_counter()
    model = state.serving()
    files = await uploaded(request, "files", state.settings.max_images)
    datas = [bytes(f.data) for f in files]
    names = [f.filename for f in files]
    scorer, max_pixels = model.scorer, state.settings.max_pixels

    def prepare() -> np.ndarray:
        return np.stack([decode(scorer.prepare, d, i, names[i], max_pixels) for i, d in enumerate(datas)])

    x = prepare() if sum(map(len, datas)) <= INLINE_DECODE_BYTES else await asyncio.to_thread(prepare)
    proba = await state.score(model, x)
    decisions, scores = model.decide(proba), model.defect_score(proba)
    results = [{"filename": names[i], "sha256": sha256_bytes(d),
                "probabilities": dict(zip(model.classes, map(float, proba[i]))),
                "decision": decisions[i][0], "is_defect": decisions[i][1], "defect_score": float(scores[i]),
                "model_version": model.version} for i, d in enumerate(datas)]
    state.log_predictions("predict", uuid.uuid4().hex, model, results, (time.perf_counter() - t0) * 1000)
    return JSONResponse({"model_version": model.version, "threshold": model.threshold, "results": results})


@router.post("/v1/inspect", response_model=InspectResponse, dependencies=[require_key("inspect")],
             responses=ERROR_RESPONSES,
             openapi_extra=file_schema("file", False, "a photo, larger than the model's input"))
async def inspect(request: Request, state: ServiceState = Depends(service),
                  stride: int | None = Query(None, ge=1, le=4096,
                                             description="window step in pixels (default: a quarter window)"),
                  threshold: float | None = Query(None, ge=0, le=1, description="default: the production threshold"),
                  min_distance: float | None = Query(None, ge=0, le=100_000,
                                                     description="pixels between located defects "
                                                                 "(default: one window)"),
                  heatmap: bool = Query(True, description="include the heatmap PNG")):
    """Score model-sized windows over a large photo (the dent workflow): defect probability
    per window, a heatmap PNG, and the defects located above the threshold."""
    with state.heavy.slot():  # 429 at once when the heavy routes are full: /v1/predict is never starved
        return await _inspect(request, state, stride, threshold, min_distance, heatmap)


async def _inspect(request: Request, state: ServiceState, stride: int | None, threshold: float | None,
                   min_distance: float | None, heatmap: bool):
    t0 = time.perf_counter()
    model = state.serving()
    upload = (await uploaded(request, "file", 1))[0]
    data = bytes(upload.data)
    size = model.scorer.patch_size  # windows as the model's patches were cut (it shrinks them if needed)
    pixels = await asyncio.to_thread(decode, model.scorer.pixels, data, 0, upload.filename, state.settings.max_pixels)
    h, w = pixels.shape[:2]
    step = stride or max(1, size // 4)
    grid, proba = await slide_windows(state, model, pixels, step, request)
    score = model.defect_score(proba)
    thr = threshold if threshold is not None else (model.threshold if model.threshold is not None else 0.5)
    found = locate_defects(model, proba, grid, thr, min_distance if min_distance is not None else float(size))
    scale = max(1, math.ceil(math.sqrt(w * h / HEATMAP_MAX_PIXELS)))
    png = None
    if heatmap:
        img = await asyncio.to_thread(inspection.heatmap, score, grid, scale)
        png = base64.b64encode(await asyncio.to_thread(encode_png, img)).decode()
    digest, top = sha256_bytes(data), float(score.max()) if len(score) else 0.0
    state.log_predictions("inspect", uuid.uuid4().hex, model, [{
        "sha256": digest, "probabilities": {"max_window_defect_score": top},
        "decision": found[0]["kind"] if found else model.classes[0], "is_defect": bool(found), "defect_score": top}],
        (time.perf_counter() - t0) * 1000)
    return JSONResponse({
        "model_version": model.version, "sha256": digest, "width": w, "height": h, "window": size,
        "stride": step, "windows": grid.count, "threshold": float(thr),
        "grid": {"columns": len(grid.xs), "rows": len(grid.ys), "x": grid.centers_x.tolist(),
                 "y": grid.centers_y.tolist()},
        "scores": np.round(score.reshape(grid.shape), 5).tolist(), "defects": found,
        "heatmap_png": png, "heatmap_scale": scale})
