"""The labeling page and its API: GET /label (the page, or its sign-in form with a 401), POST
/label/login and /label/logout, and under /v1/labeling: the queue as this labeler sees it, each
item's image and heatmap, and POSTs that store a label, a skip or an undo.

Every route needs a labeler token (``DEFECT_ASSETS_LABELER_TOKENS``): sent as ``Authorization:
Bearer <token>`` or ``X-Labeler-Token`` by programs, or kept by the browser in an HttpOnly,
SameSite=Strict cookie after the sign-in form. A request without one gets 401. A write that
comes with the cookie must also come from this origin (an Origin header naming another site
gets 403), and write bodies are JSON, which a cross-site form cannot send."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from html import escape as html_escape
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from fastapi import APIRouter, Depends, Form, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from defect_assets.ml.images import decode_image, encode_png
from defect_assets.serving import heavy, inspection
from defect_assets.serving.errors import ApiError, error_response
from defect_assets.serving.labeling import LabelingDesk
from defect_assets.serving.state import ServiceState, service

PAGES = Path(__file__).resolve().parents[1] / "pages"
COOKIE = "defect_assets_labeler"
COOKIE_SECONDS = 12 * 3600
TOKEN_HEADER = "X-Labeler-Token"
PASS_THROUGH = {".png": "image/png", ".jpg": "image/jpeg"}  # what every browser shows as stored
HEATMAP_COLOR = (230, 40, 30)
HEATMAP_MAX_ALPHA = 170
HEATMAP_MAX_PIXELS = 4_000_000  # larger photos get a coarser overlay (the browser scales it up)
WRITE_PREFIXES = ("/v1/labeling/", "/label/login")
MAX_WRITE_BYTES = 16 * 1024  # a label is a few hundred bytes of JSON

router = APIRouter(tags=["labeling"])


class _TooLarge(Exception):
    pass


class WriteBodyCap:
    """ASGI middleware: a labeling write larger than ``max_bytes`` is answered 413 before it is
    read (Content-Length) or as soon as the streamed bytes pass the cap; the app never sees it."""

    def __init__(self, app, max_bytes: int = MAX_WRITE_BYTES, prefixes: tuple[str, ...] = WRITE_PREFIXES):
        self.app, self.max_bytes, self.prefixes = app, max_bytes, prefixes

    def _answer(self):
        return error_response(413, "payload_too_large", f"a labeling request is at most {self.max_bytes:,} bytes")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self.prefixes):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > self.max_bytes:
            return await self._answer()(scope, receive, send)
        seen, over, started = 0, False, False

        async def capped_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if not over:
                started = True
                await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._answer()(scope, receive, send)
# own scheme names: the default (the class name) would replace the API key's "APIKeyHeader" in /openapi.json
bearer = HTTPBearer(auto_error=False, scheme_name="LabelerBearer",
                    description="a labeler token (DEFECT_ASSETS_LABELER_TOKENS)")
token_header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False, scheme_name="LabelerToken",
                            description="a labeler token")


class LabelRequest(BaseModel):
    item_id: str = Field(max_length=64, description="a queue item's id (from GET /v1/labeling/queue)")
    label: str = Field(max_length=200, description="one of the queue's classes")


class ItemRequest(BaseModel):
    item_id: str = Field(max_length=64)


def desk(state: ServiceState) -> LabelingDesk:
    return state.labeling


async def signed_in(request: Request, state: ServiceState, auth: HTTPAuthorizationCredentials | None,
                    header: str | None) -> tuple[str | None, bool]:
    """(the labeler named by the first valid credential: bearer token, token header, then the
    session cookie; whether it was the cookie). A stray invalid credential beside a valid one does
    not lock a labeler out. The cookie holds an opaque session id, looked up in the store: revoked
    at logout, refused after its expiry, and refused when its labeler's token is no longer configured."""
    for token in (auth.credentials if auth else None, header):
        name = state.settings.labeler_for(token) if token else None
        if name is not None:
            return name, False
    session = request.cookies.get(COOKIE)
    if session:
        name = await asyncio.to_thread(state.sessions.labeler, session)
        if name is not None and name in {n for n, _ in state.settings.labelers}:
            return name, True
    return None, False


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def labeler(request: Request, auth: HTTPAuthorizationCredentials | None = Security(bearer),
                  header: str | None = Security(token_header), state: ServiceState = Depends(service)) -> str:
    """The signed-in labeler's name, or 401."""
    if not state.settings.labelers:
        raise ApiError(401, "unauthorized", "labeling is off: no labeler tokens are configured "
                                            "(DEFECT_ASSETS_LABELER_TOKENS)")
    name, from_cookie = await signed_in(request, state, auth, header)
    if name is None:
        raise ApiError(401, "unauthorized", "a labeler token is required (Authorization: Bearer, "
                                            f"{TOKEN_HEADER}, or sign in at /label)")
    if from_cookie and request.method == "POST" and not _same_origin(request):
        raise ApiError(403, "cross_origin", "a labeling write signed in by cookie must come from this site")
    return name


AFTER_SIGN_IN = ("/label", "/annotate")
"""Where the sign-in form may send the browser back to (these pages, with their query: never
another site, so no open redirect)."""


def after_sign_in(target: str) -> str:
    path, _, query = target.partition("?")
    return target if path in AFTER_SIGN_IN and not any(c in query for c in "\r\n\\") else "/label"


def html_page(name: str, status: int = 200, message: str = "", after: str = "/label") -> HTMLResponse:
    html = (PAGES / name).read_text(encoding="utf-8").replace("{{message}}", message).replace(
        "{{next}}", html_escape(after_sign_in(after), quote=True))
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/label", response_class=HTMLResponse, include_in_schema=False)
async def labeling_page(request: Request, state: ServiceState = Depends(service),
                        auth: HTTPAuthorizationCredentials | None = Security(bearer),
                        header: str | None = Security(token_header)):
    """The labeling page; without a valid token, its sign-in form (401)."""
    if (await signed_in(request, state, auth, header))[0] is None:
        why = "" if state.settings.labelers else "Labeling is off: no labeler tokens are configured."
        return html_page("login.html", 401, why)
    return html_page("labeling.html")


@router.post("/label/login", include_in_schema=False)
async def login(request: Request, token: str = Form("", max_length=512),
                after: str = Form("/label", alias="next", max_length=2048), state: ServiceState = Depends(service)):
    after = after_sign_in(after)
    name = state.settings.labeler_for(token)
    if name is None or not _same_origin(request):
        return html_page("login.html", 401, "That token is not a labeler's token.", after)
    # the cookie carries an opaque session id stored server-side, never the token itself
    session = await asyncio.to_thread(state.sessions.create, name, COOKIE_SECONDS)
    response = RedirectResponse(after, status_code=303)
    response.set_cookie(COOKIE, session, max_age=COOKIE_SECONDS, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/label/logout", include_in_schema=False)
async def logout(request: Request, state: ServiceState = Depends(service)):
    """End the session: its server-side record is deleted, so the cookie is worthless from now on
    (on every replica), even if it was copied before."""
    await asyncio.to_thread(state.sessions.revoke, request.cookies.get(COOKIE))
    response = RedirectResponse("/label", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/v1/labeling/queue")
async def queue_view(name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """The current queue as this labeler sees it: progress, each item's status (todo, labeled,
    skipped) with the model's guess, and the next item to label."""
    return JSONResponse(await asyncio.to_thread(desk(state).view, name))


def _answer(state: ServiceState, name: str, event, created: bool, **extra) -> JSONResponse:
    view = desk(state).view(name)
    doc = {"event": {**dataclasses.asdict(event), "id": event.id}, "stored": created, **extra,
           "progress": view["progress"], "next": view["next"], "can_undo": view["can_undo"]}
    return JSONResponse(doc, status_code=201 if created else 200)


@router.post("/v1/labeling/labels", status_code=201)
async def save_label(body: LabelRequest, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Store a label for a queued image (201; 200 when the same label was already stored: one
    row either way). 404 for an item not in the current queue, 422 for a class the queue does
    not have, 409 when you labeled it differently (undo first)."""
    def run():
        event, created = desk(state).label(name, body.item_id, body.label)
        return _answer(state, name, event, created)

    return await asyncio.to_thread(run)


@router.post("/v1/labeling/skips", status_code=201)
async def save_skip(body: ItemRequest, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Skip a queued image for now (it stays unlabeled and in the pool)."""
    def run():
        event, created = desk(state).skip(name, body.item_id)
        return _answer(state, name, event, created)

    return await asyncio.to_thread(run)


@router.post("/v1/labeling/undo", status_code=201)
async def undo(name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Retract your latest label or skip in this queue (stored as an undo event: nothing is
    deleted); the image is offered again."""
    def run():
        event, row = desk(state).undo(name)
        queue = desk(state).queue()
        return _answer(state, name, event, True, restored=desk(state).describe(queue, row, "todo"))

    return await asyncio.to_thread(run)


@router.get("/v1/labeling/labels")
async def stored_labels(name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Every active label stored from the labeling page (all queues and batches): image,
    label, labeler, time, the model version shown, queue and item."""
    table = await asyncio.to_thread(desk(state).log.labels)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return JSONResponse({"labels": rows, "count": len(rows)})


@router.get("/v1/labeling/items/{item_id}/image", response_class=Response)
async def item_image(item_id: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """The queued image, as stored (PNG and JPEG) or as PNG (other formats)."""
    def run():
        _, row = desk(state).item(item_id)
        data = state.settings.store.read_bytes(row["stored_key"])
        suffix = Path(row["stored_key"]).suffix.lower()
        if suffix in PASS_THROUGH:
            return Response(data, media_type=PASS_THROUGH[suffix], headers={"Cache-Control": "private, max-age=3600"})
        return Response(encode_png(decode_image(data, "RGB", state.settings.max_pixels)), media_type="image/png")

    return await asyncio.to_thread(run)


@router.get("/v1/labeling/items/{item_id}/heatmap", response_class=Response)
async def item_heatmap(item_id: str, request: Request, name: str = Depends(labeler),
                       state: ServiceState = Depends(service)):
    """Where the model sees a defect in the queued photo: its windows' defect probability as a
    transparent red overlay of the photo's size. Exists for models trained on windows around
    marked defects (the dent workflow), scored by the queue's own model version."""
    queue, row = await asyncio.to_thread(desk(state).item, item_id)
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
    h, w = pixels.shape[:2]
    size = model.scorer.input_size
    # the stride is this route's own choice: the smallest that fits the window cap and the work budget
    stride = heavy.fitting_stride(w, h, size, model.scorer.cost, state.settings.max_work_gmac,
                                  state.settings.max_windows, max(size // 4, 1))
    grid = inspection.window_grid(w, h, size, stride)
    score = model.defect_score(await heavy.score_windows(state, model, pixels, grid, request))
    scale = max(1, math.ceil(math.sqrt(w * h / HEATMAP_MAX_PIXELS)))
    gray = await asyncio.to_thread(inspection.heatmap, score, grid, scale)
    rgba = np.zeros(gray.shape + (4,), np.uint8)
    rgba[..., :3] = HEATMAP_COLOR
    rgba[..., 3] = (gray.astype(np.uint16) * HEATMAP_MAX_ALPHA // 255).astype(np.uint8)
    return Response(await asyncio.to_thread(encode_png, rgba), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=600"})
