"""The annotation view and its API: GET /annotate (the page, or the labeling sign-in form with a
401), and under /v1/annotations: the ingested batches and their images, the marks drawn on an
image (read and save), the model's suggestions for it, and a batch's marks as points.csv and as
LabelImg Pascal VOC XML. Every route needs a labeler token, exactly as the labeling page's API
does (``routes.labeling.labeler``: bearer, header or the sign-in cookie; cookie writes only from
this origin)."""

from __future__ import annotations

import asyncio
import base64
import math
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from defect_assets.ml.images import decode_image, encode_png
from defect_assets.serving import inspection
from defect_assets.serving.annotation import MAX_MARKS, AnnotationDesk
from defect_assets.serving.routes.labeling import PASS_THROUGH, bearer, html_page, labeler, signed_in, token_header
from defect_assets.serving.routes.scoring import HEATMAP_MAX_PIXELS, locate_defects, slide_windows
from defect_assets.serving.state import ServiceState, service

WRITE_PREFIXES = ("/v1/annotations/",)
MAX_WRITE_BYTES = 256 * 1024  # MAX_MARKS marks and as many suggestion decisions, with room to spare
BATCH = "/v1/annotations/batches/{batch}"

router = APIRouter(tags=["annotations"])


class MarkIn(BaseModel):
    model_config = ConfigDict(strict=True)  # a coordinate is a JSON number: not "5", not true
    kind: str = Field(max_length=16, description="point or box")
    label: str = Field(max_length=200, description="a class (GET .../marks lists them)")
    x: float | None = Field(None, description="point: column in image pixels")
    y: float | None = Field(None, description="point: row in image pixels")
    xmin: float | None = None
    ymin: float | None = None
    xmax: float | None = None
    ymax: float | None = None


class SuggestionIn(BaseModel):
    model_config = ConfigDict(strict=True)
    x: float
    y: float
    score: float
    label: str = Field("", max_length=200)
    decision: str = Field(max_length=16, description="accepted or rejected")


class SaveRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    image: str = Field(max_length=1000, description="the image's path in the batch")
    # no max_length here: more than MAX_MARKS is the desk's 413 (too_many_marks), as documented, not a 422
    marks: list[MarkIn] = Field(default_factory=list, description=f"at most {MAX_MARKS} (else 413)")
    no_defect: bool = Field(False, description="the explicit answer 'no defect here' (no marks)")
    suggestions: list[SuggestionIn] = Field(default_factory=list,
                                            description=f"the model's proposals you accepted or rejected (at most "
                                                        f"{MAX_MARKS}, else 413)")
    model_version: str = Field("", max_length=200, description="the model that made the suggestions")


class SuggestRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    image: str = Field(max_length=1000)
    threshold: float | None = Field(None, ge=0, le=1, description="default: the production threshold")
    stride: int | None = Field(None, ge=1, le=4096, description="window step (default: a quarter window)")


def desk(state: ServiceState) -> AnnotationDesk:
    return state.annotation


@router.get("/annotate", response_class=HTMLResponse, include_in_schema=False)
async def annotation_page(request: Request, state: ServiceState = Depends(service),
                          auth: HTTPAuthorizationCredentials | None = Security(bearer),
                          header: str | None = Security(token_header)):
    """The annotation view; without a valid token, the labeling sign-in form (401)."""
    if (await signed_in(request, state, auth, header))[0] is None:
        why = "" if state.settings.labelers else "Labeling is off: no labeler tokens are configured."
        query = request.url.query
        return html_page("login.html", 401, why, after="/annotate" + (f"?{query}" if query else ""))
    return html_page("annotate.html")


@router.get("/v1/annotations/batches")
async def batches(name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Every ingested batch with its image count and how many are annotated."""
    def run():
        out = []
        for b in desk(state).batches():
            listing = desk(state).listing(b)
            out.append({"batch": b, "images": len(listing["images"]), "annotated": listing["annotated"]})
        return {"batches": out}

    return JSONResponse(await asyncio.to_thread(run))


@router.get(BATCH)
async def batch_images(batch: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """The batch's images (path, size, marks so far, answered 'no defect') and its mark classes."""
    return JSONResponse(await asyncio.to_thread(desk(state).listing, batch))


@router.get(BATCH + "/image", response_class=Response)
async def batch_image(batch: str, image: str = Query(max_length=1000), name: str = Depends(labeler),
                      state: ServiceState = Depends(service)):
    """The photo at full resolution (PNG and JPEG as stored, other formats as PNG)."""
    def run():
        img = desk(state).image(batch, image)
        data = state.settings.store.read_bytes(img.stored_key)
        suffix = Path(img.stored_key).suffix.lower()
        if suffix in PASS_THROUGH:
            return Response(data, media_type=PASS_THROUGH[suffix], headers={"Cache-Control": "private, max-age=3600"})
        return Response(encode_png(decode_image(data, "RGB", state.settings.max_pixels)), media_type="image/png")

    return await asyncio.to_thread(run)


@router.get(BATCH + "/marks")
async def read_marks(batch: str, image: str = Query(max_length=1000), name: str = Depends(labeler),
                     state: ServiceState = Depends(service)):
    """What counts for this image now: the latest annotation (marks, 'no defect', suggestion
    decisions, who and when), how many versions it has, the classes, and the marks of the
    batch's own label files (which win over marks drawn here)."""
    return JSONResponse(await asyncio.to_thread(desk(state).view, batch, image))


@router.post(BATCH + "/marks", status_code=201)
async def save_marks(batch: str, body: SaveRequest, name: str = Depends(labeler),
                     state: ServiceState = Depends(service)):
    """Store the image's marks as you leave them (a new version; 200 when it is the same as the
    latest: one object). 404 unknown batch or image, 422 a mark outside the image, an unknown
    class, an empty box, marks together with 'no defect here', 413 over the caps."""
    def run():
        event, created = desk(state).save(name, batch, body.image, [m.model_dump(exclude_none=True) for m in
                                                                    body.marks],
                                          body.no_defect, [s.model_dump() for s in body.suggestions],
                                          body.model_version)
        return JSONResponse({"annotation": event.to_doc(), "stored": created}, status_code=201 if created else 200)

    return await asyncio.to_thread(run)


@router.post(BATCH + "/suggestions")
async def suggestions(batch: str, body: SuggestRequest, request: Request, name: str = Depends(labeler),
                      state: ServiceState = Depends(service)):
    """The production model slid over the photo (the windows of /v1/inspect): candidate defect
    centers above the threshold, strongest first, for the person to accept or reject, and the
    heatmap (gray PNG, 255 = probability 1, the photo's size divided by ``heatmap_scale``)."""
    model = state.serving()
    img = await asyncio.to_thread(desk(state).image, batch, body.image)
    with state.heavy.slot():  # 429 at once when the heavy routes are full
        return await _suggestions(request, state, model, img, body)


async def _suggestions(request: Request, state: ServiceState, model, img, body: SuggestRequest):
    data = await asyncio.to_thread(state.settings.store.read_bytes, img.stored_key)
    pixels = await asyncio.to_thread(model.scorer.pixels, data, state.settings.max_pixels)
    size = model.scorer.patch_size
    grid, proba = await slide_windows(state, model, pixels, body.stride or max(1, size // 4), request)
    thr = body.threshold if body.threshold is not None else (model.threshold if model.threshold is not None else 0.5)
    found = locate_defects(model, proba, grid, thr, float(size))
    h, w = pixels.shape[:2]
    scale = max(1, math.ceil(math.sqrt(w * h / HEATMAP_MAX_PIXELS)))
    gray = await asyncio.to_thread(inspection.heatmap, model.defect_score(proba), grid, scale)
    png = base64.b64encode(await asyncio.to_thread(encode_png, gray)).decode()
    return JSONResponse({"model_version": model.version, "threshold": float(thr), "window": size,
                         "suggestions": [{"x": d["x"], "y": d["y"], "score": round(d["score"], 5), "label": d["kind"]}
                                         for d in found],
                         "heatmap_png": png, "heatmap_scale": scale})


@router.get(BATCH + "/decisions")
async def decisions(batch: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Every accepted and rejected suggestion of the batch's latest annotations, and the share accepted."""
    table = await asyncio.to_thread(desk(state).decisions, batch)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    accepted = sum(r["decision"] == "accepted" for r in rows)
    return JSONResponse({"decisions": rows, "accepted": accepted, "rejected": len(rows) - accepted,
                         "accepted_share": accepted / len(rows) if rows else None})


@router.get(BATCH + "/points.csv", response_class=Response)
async def export_points(batch: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """The batch's point marks as points.csv (image,x,y,label): upload it with the batch to get the same rows."""
    text = await asyncio.to_thread(desk(state).points_csv, batch)
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{batch}-points.csv"'})


@router.get(BATCH + "/voc", response_class=Response)
async def export_voc(batch: str, image: str = Query(max_length=1000), name: str = Depends(labeler),
                     state: ServiceState = Depends(service)):
    """One image's boxes as a LabelImg Pascal VOC XML file."""
    xml = await asyncio.to_thread(desk(state).voc_xml, batch, image)
    return Response(xml, media_type="application/xml")


@router.get(BATCH + "/voc.zip", response_class=Response)
async def export_voc_zip(batch: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Every image's boxes as LabelImg XML files (one per image, beside the image's path), zipped."""
    data = await asyncio.to_thread(desk(state).voc_zip, batch)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{batch}-voc.zip"'})
