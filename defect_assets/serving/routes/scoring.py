"""Scoring: POST /v1/predict (whole images) and POST /v1/inspect (a large photo, windows,
heatmap, located defects). Every image is prepared by the served scorer (``ml.scorer``: the
preprocessing training used) and scored in micro-batches with concurrent requests."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from defect_assets.ml.images import ImageRejected, encode_png, sha256_bytes
from defect_assets.serving import windows
from defect_assets.serving.dependencies import require_key, served_model, service
from defect_assets.serving.errors import ApiError
from defect_assets.serving.models import ServedModel
from defect_assets.serving.schemas import ERROR_RESPONSES, InspectResponse, PredictResponse
from defect_assets.serving.state import ServiceState
from defect_assets.serving.uploads import Part, TooManyParts, UploadError, file_schema, parse_multipart

UPLOAD_ROUTES = ("/v1/predict", "/v1/inspect")
INLINE_DECODE_BYTES = 256 * 1024  # smaller uploads are decoded on the event loop (a thread hop costs more)
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


@router.post("/v1/predict", response_model=PredictResponse, dependencies=[require_key("predict")],
             responses=ERROR_RESPONSES,
             openapi_extra=file_schema("files", True, "one or more images (PNG, JPEG, BMP, TIFF)"))
async def predict(request: Request, state: ServiceState = Depends(service),
                  model: ServedModel = Depends(served_model)):
    """Score whole images: each is turned into the model's input patch by the preprocessing
    training used, and scored in a micro-batch with concurrent requests."""
    t0 = time.perf_counter()
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
    return {"model_version": model.version, "threshold": model.threshold, "results": results}


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
                   min_distance: float | None, heatmap: bool) -> dict:
    t0 = time.perf_counter()
    model: ServedModel = state.serving()
    upload = (await uploaded(request, "file", 1))[0]
    data = bytes(upload.data)
    size = windows.window_size(model)
    pixels = await asyncio.to_thread(decode, model.scorer.pixels, data, 0, upload.filename, state.settings.max_pixels)
    h, w = pixels.shape[:2]
    slid = await windows.slide_windows(state, model, pixels, stride or windows.default_stride(model), request)
    grid, score = slid.grid, slid.score
    thr = windows.threshold_of(model, threshold)
    found = windows.locate_defects(model, slid, thr, min_distance if min_distance is not None else float(size))
    scale = windows.heatmap_scale(w, h)
    png = None
    if heatmap:
        gray, _ = await windows.heatmap(slid)
        png = base64.b64encode(await asyncio.to_thread(encode_png, gray)).decode()
    digest, top = sha256_bytes(data), float(score.max()) if len(score) else 0.0
    decision, is_defect = windows.photo_decision(model, found)
    state.log_predictions("inspect", uuid.uuid4().hex, model, [{
        "sha256": digest, "probabilities": {"max_window_defect_score": top},
        "decision": decision, "is_defect": is_defect, "defect_score": top}],
        (time.perf_counter() - t0) * 1000)
    return {
        "model_version": model.version, "sha256": digest, "width": w, "height": h, "window": size,
        "stride": slid.stride, "windows": grid.count, "threshold": float(thr),
        "decision": decision, "is_defect": is_defect, "max_window_score": top,
        "grid": {"columns": len(grid.xs), "rows": len(grid.ys), "x": grid.centers_x.tolist(),
                 "y": grid.centers_y.tolist()},
        "scores": np.round(score.reshape(grid.shape), 5).tolist(), "defects": found,
        "heatmap_png": png, "heatmap_scale": scale}
