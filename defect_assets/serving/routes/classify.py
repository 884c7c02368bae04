"""GET /classify: the classify-one-image page (DIGITS' "classify one"): a person picks a photo and
sees the production model's decision, class scores and version from POST /v1/predict and, for a
photo larger than the model's input, the heatmap and located defects from POST /v1/inspect. The
page is a file served by the app (no CDN); the scoring routes keep their own API-key rule, so a
protected service asks for the key on the page."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from defect_assets.serving.routes.labeling import html_page

router = APIRouter(tags=["pages"])


@router.get("/classify", response_class=HTMLResponse, include_in_schema=False)
async def classify_page():
    return html_page("classify.html")
