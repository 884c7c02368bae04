"""What routes depend on, as FastAPI dependencies: the service state, the artifact store, the
served model, the desks, and who is asking (the API key, the dashboard's key or Basic password,
a labeler's bearer token, token header or sign-in session). Every router takes these from here,
never from another router.

Labelers: a token (``DEFECT_ASSETS_LABELER_TOKENS``) sent as ``Authorization: Bearer <token>``
or ``X-Labeler-Token`` by programs, or kept by the browser in an HttpOnly, SameSite=Strict cookie
after the sign-in form (an opaque session id, looked up in the store). A request without one
gets 401. A write that comes with the cookie must also come from this origin (an Origin header
naming another site gets 403)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from urllib.parse import urlsplit

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from defect_assets.serving.annotation import AnnotationDesk
from defect_assets.serving.errors import ApiError
from defect_assets.serving.labeling import LabelingDesk
from defect_assets.serving.models import ServedModel
from defect_assets.serving.settings import API_KEY_HEADER
from defect_assets.serving.state import ServiceState
from defect_assets.storage.base import ObjectStore

COOKIE = "defect_assets_labeler"
COOKIE_SECONDS = 12 * 3600
TOKEN_HEADER = "X-Labeler-Token"


# --- the service and what it holds ---

async def service(request: Request) -> ServiceState:
    return request.app.state.service


async def artifact_store(state: ServiceState = Depends(service)) -> ObjectStore:
    """The artifact store (registry, batches, labels, marks)."""
    return state.settings.store


async def served_model(state: ServiceState = Depends(service)) -> ServedModel:
    """The model to answer with, or 503 when none is loaded yet."""
    return state.serving()


async def labeling_desk(state: ServiceState = Depends(service)) -> LabelingDesk:
    return state.labeling


async def annotation_desk(state: ServiceState = Depends(service)) -> AnnotationDesk:
    return state.annotation


# --- the API key ---

key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                          description="the service's API key (DEFECT_ASSETS_API_KEY)")


def require_key(route: str):
    """A dependency that answers 401 unless the request carries the key (when ``route`` is
    protected by the settings)."""

    async def check(key: str | None = Security(key_header), state: ServiceState = Depends(service)) -> None:
        if not state.settings.protects(route):
            return
        # async: runs on the event loop, no thread hop per request.
        if not state.key_matches(key):
            raise ApiError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header")

    return Depends(check)


def basic_password(request: Request) -> str | None:
    """The password of an HTTP Basic ``Authorization`` header, if there is one."""
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[1] if ":" in decoded else None


async def dashboard_key(request: Request, key: str | None = Security(key_header),
                        state: ServiceState = Depends(service)) -> None:
    """The dashboard's rule: the key as X-API-Key or as the password of HTTP Basic (which a
    browser prompts for and then sends with every request of the page), when protected."""
    if not state.settings.protects("dashboard"):
        return
    if state.key_matches(key) or state.key_matches(basic_password(request)):
        return
    raise ApiError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header (or Basic password)")


# --- labelers ---

# own scheme names: the default (the class name) would replace the API key's "APIKeyHeader" in /openapi.json
bearer = HTTPBearer(auto_error=False, scheme_name="LabelerBearer",
                    description="a labeler token (DEFECT_ASSETS_LABELER_TOKENS)")
token_header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False, scheme_name="LabelerToken",
                            description="a labeler token")


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


async def maybe_labeler(request: Request, auth: HTTPAuthorizationCredentials | None = Security(bearer),
                        header: str | None = Security(token_header),
                        state: ServiceState = Depends(service)) -> str | None:
    """The signed-in labeler's name, or None (the pages answer their sign-in form then)."""
    return (await signed_in(request, state, auth, header))[0]


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def labeler(request: Request, auth: HTTPAuthorizationCredentials | None = Security(bearer),
                  header: str | None = Security(token_header), state: ServiceState = Depends(service)) -> str:
    """The signed-in labeler's name, or 401 (403 for a cookie write from another site)."""
    if not state.settings.labelers:
        raise ApiError(401, "unauthorized", "labeling is off: no labeler tokens are configured "
                                            "(DEFECT_ASSETS_LABELER_TOKENS)")
    name, from_cookie = await signed_in(request, state, auth, header)
    if name is None:
        raise ApiError(401, "unauthorized", "a labeler token is required (Authorization: Bearer, "
                                            f"{TOKEN_HEADER}, or sign in at /label)")
    if from_cookie and request.method == "POST" and not same_origin(request):
        raise ApiError(403, "cross_origin", "a labeling write signed in by cookie must come from this site")
    return name
