"""The analysts' dashboard's data and files (its page, GET /dashboard, is ``routes.pages``):
/dashboard/api/summary (its data, JSON),
/dashboard/static/* (the page's script and style, and plotly.js from the installed ``plotly``
package: nothing comes from a CDN), /dashboard/files/* (the tables behind the charts) and
/dashboard/examples/* (the champion's mistakes as pictures) and /dashboard/label_issues/*/image
(the suspect labels' photos, as stored).

With an API key set (and DEFECT_ASSETS_DASHBOARD_REQUIRES_KEY not 0) every dashboard route asks
for it: as the X-API-Key header, or as the password of HTTP Basic authentication, which a
browser prompts for and then sends with every request of the page.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib.util
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from defect_assets.serving import dashboard
from defect_assets.serving.dependencies import artifact_store, dashboard_key, service
from defect_assets.serving.errors import ApiError
from defect_assets.serving.schemas import DashboardSummary
from defect_assets.serving.state import ServiceState
from defect_assets.serving.web import stored_image
from defect_assets.storage.base import ObjectStore, StoreKeyError

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGE_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter(tags=["dashboard"])


def plotly_js() -> Path:
    """plotly.min.js as the ``plotly`` package ships it (found without importing the package)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ApiError(500, "missing_dependency", "the plotly package is not installed (pip install plotly)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


@functools.cache
def _gzipped(path: str) -> bytes:
    return gzip.compress(Path(path).read_bytes(), compresslevel=6)


guarded = [Depends(dashboard_key)]


@router.get("/dashboard/static/{name}", include_in_schema=False, dependencies=guarded)
async def static(name: str, request: Request):
    if name == "plotly.min.js":
        path = plotly_js()
        headers = {"Cache-Control": "public, max-age=86400"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = await asyncio.to_thread(_gzipped, str(path))
            return Response(body, media_type="text/javascript", headers={**headers, "Content-Encoding": "gzip",
                                                                           "Vary": "Accept-Encoding"})
        return FileResponse(path, media_type="text/javascript", headers=headers)
    if name not in PAGE_FILES:
        raise ApiError(404, "not_found", f"no dashboard file {name!r}")
    return FileResponse(STATIC / name, media_type=PAGE_FILES[name], headers=NO_STORE)


@router.get("/dashboard/api/summary", dependencies=guarded, response_model=DashboardSummary)
async def summary(store: ObjectStore = Depends(artifact_store)):
    """Everything the dashboard draws, from the artifact store: model quality per evaluation (with
    95% intervals and the majority baseline), the current and previous champions' ROC curves and
    confusion matrices, data per batch, monitoring per day, the champion's most confident
    mistakes, active-learning progress. A missing section is null, with a note in ``notes``."""
    doc = await asyncio.to_thread(dashboard.summary, store)
    # validated against the model, then sent as the dashboard module writes it (strict JSON, as is)
    DashboardSummary.model_validate(doc)
    return Response(dashboard.dumps(doc), media_type="application/json", headers=NO_STORE)


async def _store_file(store: ObjectStore, found: tuple[str, str] | None, filename: str) -> Response:
    if found is None:
        raise ApiError(404, "not_found", f"no table {filename!r}")
    key, media = found
    try:
        data = await asyncio.to_thread(store.read_bytes, key)
    except StoreKeyError:
        raise ApiError(404, "not_found", f"{filename} has not been written yet") from None
    return Response(data, media_type=media, headers={**NO_STORE,
                                                     "Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/dashboard/files/{name}", include_in_schema=False, dependencies=guarded)
async def table_file(name: str, store: ObjectStore = Depends(artifact_store)):
    return await _store_file(store, dashboard.download_key(name), name)


@router.get("/dashboard/files/test_predictions/{version}.{ext}", include_in_schema=False, dependencies=guarded)
async def test_predictions_file(version: str, ext: str, store: ObjectStore = Depends(artifact_store)):
    return await _store_file(store, dashboard.download_key(ext, version), f"test_predictions-{version}.{ext}")


@router.get("/dashboard/examples/{version}/{name}", include_in_schema=False, dependencies=guarded)
async def example(version: str, name: str, store: ObjectStore = Depends(artifact_store)):
    key = dashboard.example_key(version, name)
    if key is None:
        raise ApiError(404, "not_found", "no such picture")
    try:
        data = await asyncio.to_thread(store.read_bytes, key)
    except StoreKeyError:
        raise ApiError(404, "not_found", "no such picture") from None
    return Response(data, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/dashboard/label_issues/{item_id}/image", include_in_schema=False, dependencies=guarded)
async def label_issue_image(item_id: str, state: ServiceState = Depends(service)):
    """A suspect label's photo (an image of the latest label_issues table), as stored (PNG, JPEG) or as PNG."""
    store = state.settings.store

    def read() -> Response:
        key = dashboard.label_issue_image_key(store, item_id)
        if key is None:
            raise ApiError(404, "not_found", "no such image among the label issues")
        try:
            return stored_image(store, key, state.settings.max_pixels)
        except StoreKeyError:
            raise ApiError(404, "not_found", "the image is not in the store") from None

    return await asyncio.to_thread(read)
