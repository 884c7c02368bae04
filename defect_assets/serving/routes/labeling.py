"""The labeling page's API, under /v1/labeling: the queue as this labeler sees it, each item's
image and heatmap, and POSTs that store a label, a skip or an undo. The page itself and its
sign-in form are ``routes.pages``.

Every route needs a labeler token (``dependencies.labeler``: bearer, token header or the sign-in
cookie; 401 without). A write that comes with the cookie must also come from this origin (403
otherwise), and write bodies are JSON, which a cross-site form cannot send; a write body over
``MAX_WRITE_BYTES`` is answered 413 before it is read (``serving.guard``)."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from defect_assets.ml.images import encode_png
from defect_assets.serving.dependencies import labeler, labeling_desk, service
from defect_assets.serving.errors import ApiError
from defect_assets.serving.labeling import LabelingDesk
from defect_assets.serving.schemas import (
    LabelAnswer,
    Labelers,
    QueueView,
    ReviewAnswer,
    ReviewItems,
    StoredLabels,
    UndoAnswer,
)
from defect_assets.serving.state import ServiceState
from defect_assets.serving.web import stored_image
from defect_assets.serving.windows import heatmap, slide_windows

HEATMAP_COLOR = (230, 40, 30)
HEATMAP_MAX_ALPHA = 170
WRITE_PREFIXES = ("/v1/labeling/", "/label/login")
MAX_WRITE_BYTES = 16 * 1024  # a label is a few hundred bytes of JSON

router = APIRouter(tags=["labeling"])


class LabelRequest(BaseModel):
    item_id: str = Field(max_length=64, description="a queue item's id (from GET /v1/labeling/queue)")
    label: str = Field(max_length=200, description="one of the queue's classes")


class ItemRequest(BaseModel):
    item_id: str = Field(max_length=64)


@router.get("/v1/labeling/queue", response_model=QueueView)
async def queue_view(name: str = Depends(labeler), desk: LabelingDesk = Depends(labeling_desk)):
    """The current queue as this labeler sees it: progress, each item's status (todo, labeled,
    skipped) with the model's guess, and the next item to label."""
    return await asyncio.to_thread(desk.view, name)


def _answer(desk: LabelingDesk, name: str, event, created: bool, response: Response, **extra) -> dict:
    view = desk.view(name)
    response.status_code = 201 if created else 200
    return {"event": {**dataclasses.asdict(event), "id": event.id}, "stored": created, **extra,
            "progress": view["progress"], "next": view["next"], "can_undo": view["can_undo"]}


@router.post("/v1/labeling/labels", status_code=201, response_model=LabelAnswer,
             responses={200: {"model": LabelAnswer, "description": "the same label was already stored"}})
async def save_label(body: LabelRequest, response: Response, name: str = Depends(labeler),
                     desk: LabelingDesk = Depends(labeling_desk)):
    """Store a label for a queued image (201; 200 when the same label was already stored: one
    row either way). 404 for an item not in the current queue, 422 for a class the queue does
    not have, 409 when you labeled it differently (undo first)."""
    def run():
        event, created = desk.label(name, body.item_id, body.label)
        return _answer(desk, name, event, created, response)

    return await asyncio.to_thread(run)


@router.post("/v1/labeling/skips", status_code=201, response_model=LabelAnswer,
             responses={200: {"model": LabelAnswer, "description": "already skipped"}})
async def save_skip(body: ItemRequest, response: Response, name: str = Depends(labeler),
                    desk: LabelingDesk = Depends(labeling_desk)):
    """Skip a queued image for now (it stays unlabeled and in the pool)."""
    def run():
        event, created = desk.skip(name, body.item_id)
        return _answer(desk, name, event, created, response)

    return await asyncio.to_thread(run)


@router.post("/v1/labeling/undo", status_code=201, response_model=UndoAnswer)
async def undo(response: Response, name: str = Depends(labeler), desk: LabelingDesk = Depends(labeling_desk)):
    """Retract your latest label or skip in this queue (stored as an undo event: nothing is
    deleted); the image is offered again."""
    def run():
        event, row = desk.undo(name)
        return _answer(desk, name, event, True, response, restored=desk.describe(desk.queue(), row, "todo"))

    return await asyncio.to_thread(run)


@router.get("/v1/labeling/labels", response_model=StoredLabels)
async def stored_labels(name: str = Depends(labeler), desk: LabelingDesk = Depends(labeling_desk)):
    """Every active label stored from the labeling page (all queues and batches): image,
    label, labeler, time, the model version shown, queue and item."""
    table = await asyncio.to_thread(desk.log.labels)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return {"labels": rows, "count": len(rows)}


@router.get("/v1/labeling/items/{item_id}/image", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
async def item_image(item_id: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """The queued image, as stored (PNG and JPEG) or as PNG (other formats)."""
    def run():
        _, row = state.labeling.item(item_id)
        return stored_image(state.settings.store, row["stored_key"], state.settings.max_pixels)

    return await asyncio.to_thread(run)


@router.get("/v1/labeling/items/{item_id}/heatmap", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def item_heatmap(item_id: str, request: Request, name: str = Depends(labeler),
                       state: ServiceState = Depends(service)):
    """Where the model sees a defect in the queued photo: its windows' defect probability as a
    transparent red overlay of the photo's size. Exists for models trained on windows around
    marked defects (the dent workflow), scored by the queue's own model version: the windows of
    /v1/inspect at the smallest stride from a quarter window up that fits the caps."""
    queue, row = await asyncio.to_thread(state.labeling.item, item_id)
    if not queue.doc.get("heatmaps"):
        raise ApiError(404, "no_heatmap", "this queue's model scores whole images: it has no heatmap")
    model = state.serving()
    if model.version != queue.model_version:
        raise ApiError(409, "model_changed", f"the service now serves {model.version}, the queue was scored by "
                                             f"{queue.model_version}: no heatmap until the next queue")
    with state.heavy.slot():  # 429 at once when the heavy routes are full
        return await _heatmap(request, state, model, row)


async def _heatmap(request: Request, state: ServiceState, model, row: dict) -> Response:
    data = await asyncio.to_thread(state.settings.store.read_bytes, row["stored_key"])
    pixels = await asyncio.to_thread(model.scorer.pixels, data, state.settings.max_pixels)
    gray, _ = await heatmap(await slide_windows(state, model, pixels, request=request, fit=True))
    rgba = np.zeros(gray.shape + (4,), np.uint8)
    rgba[..., :3] = HEATMAP_COLOR
    rgba[..., 3] = (gray.astype(np.uint16) * HEATMAP_MAX_ALPHA // 255).astype(np.uint8)
    return Response(await asyncio.to_thread(encode_png, rgba), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=600"})


@router.get("/v1/labeling/labelers", response_model=Labelers)
async def labeler_quality(name: str = Depends(labeler), desk: LabelingDesk = Depends(labeling_desk)) -> dict:
    """Per labeler: images labeled, gold items answered, agreement with gold, and the mean Cohen's
    kappa against the other labelers on the images both labeled (NaN shown as null)."""
    rows = await asyncio.to_thread(desk.labeler_quality)
    return {"labelers": [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]}


@router.get("/v1/labeling/review", response_model=ReviewItems, response_model_exclude_unset=True)
async def review_queue(suggest: bool = False, name: str = Depends(labeler),
                       desk: LabelingDesk = Depends(labeling_desk)) -> dict:
    """The suspect labels (label_issues) nobody reviewed yet, worst first, with the given label;
    ``?suggest=true`` adds the out-of-fold model's label and its self-confidence."""
    return await asyncio.to_thread(desk.review_items, suggest)


@router.post("/v1/labeling/review", status_code=201, response_model=ReviewAnswer)
async def save_review(body: LabelRequest, response: Response, name: str = Depends(labeler),
                      desk: LabelingDesk = Depends(labeling_desk)) -> dict:
    """Confirm or change a suspect's label: a label event like any other (the batch is rebuilt by
    new_labels_sensor); the image leaves the review queue."""
    def run():
        event, created = desk.review(name, body.item_id, body.label)
        response.status_code = 201 if created else 200
        left = desk.review_items()
        return {"event": {**dataclasses.asdict(event), "id": event.id}, "stored": created,
                "remaining": len(left["items"])}

    return await asyncio.to_thread(run)


@router.get("/v1/labeling/review/{item_id}/image", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
async def review_image(item_id: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """A suspect image, as stored."""
    def run():
        row = state.labeling.review_item(item_id)
        return stored_image(state.settings.store, row["stored_key"], state.settings.max_pixels)

    return await asyncio.to_thread(run)
