"""The HTML pages (none is in /openapi.json): the labeling page at /label with its sign-in form
(POST /label/login, /label/logout), the annotation view at /annotate, the classify-one-image page
at /classify and the analysts' dashboard at /dashboard. Each page is a file of ``pages/`` or
``static/``, with its scripts and styles under /static (served by the app: no CDN); what it shows
comes from the JSON API routes, which keep their own credentials.

The labeling and annotation pages answer their sign-in form (401) without a labeler token. The
classify page needs none itself: the scoring routes keep their API-key rule, so a protected
service asks for the key on the page. The dashboard, with an API key set, answers 401 with a
Basic challenge, which makes a browser prompt for the key as a password."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from defect_assets.serving.dependencies import (
    COOKIE,
    COOKIE_SECONDS,
    dashboard_key,
    maybe_labeler,
    same_origin,
    service,
)
from defect_assets.serving.errors import ApiError, error_response
from defect_assets.serving.settings import API_KEY_HEADER
from defect_assets.serving.state import ServiceState
from defect_assets.serving.web import after_sign_in, html_page

STATIC = Path(__file__).resolve().parents[1] / "static"
CHALLENGE = 'Basic realm="defect_assets dashboard", charset="UTF-8"'
LABELING_OFF = "Labeling is off: no labeler tokens are configured."

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/label", response_class=HTMLResponse)
async def labeling_page(name: str | None = Depends(maybe_labeler), state: ServiceState = Depends(service)):
    """The labeling page; without a valid token, its sign-in form (401)."""
    if name is None:
        return html_page("login.html", 401, "" if state.settings.labelers else LABELING_OFF)
    return html_page("labeling.html")


@router.post("/label/login")
async def login(request: Request, token: str = Form("", max_length=512),
                after: str = Form("/label", alias="next", max_length=2048), state: ServiceState = Depends(service)):
    after = after_sign_in(after)
    name = state.settings.labeler_for(token)
    if name is None or not same_origin(request):
        return html_page("login.html", 401, "That token is not a labeler's token.", after)
    # the cookie carries an opaque session id stored server-side, never the token itself
    session = await asyncio.to_thread(state.sessions.create, name, COOKIE_SECONDS)
    response = RedirectResponse(after, status_code=303)
    response.set_cookie(COOKIE, session, max_age=COOKIE_SECONDS, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/label/logout")
async def logout(request: Request, state: ServiceState = Depends(service)):
    """End the session: its server-side record is deleted, so the cookie is worthless from now on
    (on every replica), even if it was copied before."""
    await asyncio.to_thread(state.sessions.revoke, request.cookies.get(COOKIE))
    response = RedirectResponse("/label", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/annotate", response_class=HTMLResponse)
async def annotation_page(request: Request, name: str | None = Depends(maybe_labeler),
                          state: ServiceState = Depends(service)):
    """The annotation view; without a valid token, the labeling sign-in form (401)."""
    if name is None:
        query = request.url.query
        return html_page("login.html", 401, "" if state.settings.labelers else LABELING_OFF,
                         after="/annotate" + (f"?{query}" if query else ""))
    return html_page("annotate.html")


@router.get("/classify", response_class=HTMLResponse)
async def classify_page():
    """The classify-one-image page (DIGITS' "classify one"): a photo's decision, class scores and
    model version from POST /v1/predict and, for a photo larger than the model's input, the
    heatmap and located defects from POST /v1/inspect."""
    return html_page("classify.html")


@router.get("/dashboard")
async def dashboard_page(request: Request, state: ServiceState = Depends(service)):
    try:
        await dashboard_key(request, request.headers.get(API_KEY_HEADER), state)
    except ApiError as e:  # a browser shows its password prompt on this answer
        return error_response(e.status, e.error, e.detail, {"WWW-Authenticate": CHALLENGE})
    return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers={"Cache-Control": "no-store"})

