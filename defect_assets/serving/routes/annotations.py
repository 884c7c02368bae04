"""The annotation view's API, under /v1/annotations: the ingested batches and their images, the
marks drawn on an image (read and save), the model's suggestions for it, and a batch's marks as
points.csv and as LabelImg Pascal VOC XML. The page itself is ``routes.pages``. Every route needs
a labeler token, exactly as the labeling API does (``dependencies.labeler``: bearer, header or the
sign-in cookie; cookie writes only from this origin)."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from defect_assets.ml.images import encode_png
from defect_assets.serving.annotation import MAX_MARKS, AnnotationDesk
from defect_assets.serving.dependencies import annotation_desk, labeler, service
from defect_assets.serving.schemas import Batches, BatchListing, Decisions, MarksView, SavedMarks, Suggestions
from defect_assets.serving.state import ServiceState
from defect_assets.serving.web import stored_image
from defect_assets.serving.windows import heatmap, locate_defects, slide_windows, threshold_of

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


@router.get("/v1/annotations/batches", response_model=Batches)
async def batches(name: str = Depends(labeler), desk: AnnotationDesk = Depends(annotation_desk)):
    """Every ingested batch with its image count and how many are annotated."""
    def run():
        out = []
        for b in desk.batches():
            listing = desk.listing(b)
            out.append({"batch": b, "images": len(listing["images"]), "annotated": listing["annotated"],
                        "needs_marks": listing["needs_marks"]})
        return {"batches": out}

    return await asyncio.to_thread(run)


@router.get(BATCH, response_model=BatchListing)
async def batch_images(batch: str, name: str = Depends(labeler), desk: AnnotationDesk = Depends(annotation_desk)):
    """The batch's images (path, size, marks so far, answered 'no defect') and its mark classes."""
    return await asyncio.to_thread(desk.listing, batch)


@router.get(BATCH + "/image", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
async def batch_image(batch: str, image: str = Query(max_length=1000), name: str = Depends(labeler),
                      state: ServiceState = Depends(service)):
    """The photo at full resolution (PNG and JPEG as stored, other formats as PNG)."""
    def run():
        img = state.annotation.image(batch, image)
        return stored_image(state.settings.store, img.stored_key, state.settings.max_pixels)

    return await asyncio.to_thread(run)


@router.get(BATCH + "/marks", response_model=MarksView)
async def read_marks(batch: str, image: str = Query(max_length=1000), name: str = Depends(labeler),
                     desk: AnnotationDesk = Depends(annotation_desk)):
    """What counts for this image now: the latest annotation (marks, 'no defect', suggestion
    decisions, who and when), how many versions it has, the classes, and the marks of the
    batch's own label files (which win over marks drawn here)."""
    return await asyncio.to_thread(desk.view, batch, image)


@router.post(BATCH + "/marks", status_code=201, response_model=SavedMarks,
             responses={200: {"model": SavedMarks, "description": "the same as the latest: nothing new stored"}})
async def save_marks(batch: str, body: SaveRequest, response: Response, name: str = Depends(labeler),
                     desk: AnnotationDesk = Depends(annotation_desk)):
    """Store the image's marks as you leave them (a new version; 200 when it is the same as the
    latest: one object). 404 unknown batch or image, 422 a mark outside the image, an unknown
    class, an empty box, marks together with 'no defect here', 413 over the caps."""
    def run():
        event, created = desk.save(name, batch, body.image, [m.model_dump(exclude_none=True) for m in body.marks],
                                   body.no_defect, [s.model_dump() for s in body.suggestions], body.model_version)
        response.status_code = 201 if created else 200
        return {"annotation": event.to_doc(), "stored": created}

    return await asyncio.to_thread(run)


@router.post(BATCH + "/suggestions", response_model=Suggestions)
async def suggestions(batch: str, body: SuggestRequest, request: Request, name: str = Depends(labeler),
                      state: ServiceState = Depends(service)):
    """The production model slid over the photo (the windows of /v1/inspect): candidate defect
    centers above the threshold, strongest first, for the person to accept or reject, and the
    heatmap (gray PNG, 255 = probability 1, the photo's size divided by ``heatmap_scale``)."""
    model = state.serving()
    img = await asyncio.to_thread(state.annotation.image, batch, body.image)
    with state.heavy.slot():  # 429 at once when the heavy routes are full
        return await _suggestions(request, state, model, img, body)


async def _suggestions(request: Request, state: ServiceState, model, img, body: SuggestRequest) -> dict:
    data = await asyncio.to_thread(state.settings.store.read_bytes, img.stored_key)
    pixels = await asyncio.to_thread(model.scorer.pixels, data, state.settings.max_pixels)
    slid = await slide_windows(state, model, pixels, body.stride, request)
    thr = threshold_of(model, body.threshold)
    found = locate_defects(model, slid, thr, float(slid.size))
    gray, scale = await heatmap(slid)
    png = base64.b64encode(await asyncio.to_thread(encode_png, gray)).decode()
    return {"model_version": model.version, "threshold": float(thr), "window": slid.size,
            "suggestions": [{"x": d["x"], "y": d["y"], "score": round(d["score"], 5), "label": d["kind"]}
                            for d in found],
            "heatmap_png": png, "heatmap_scale": scale}


@router.get(BATCH + "/decisions", response_model=Decisions)
async def decisions(batch: str, name: str = Depends(labeler), desk: AnnotationDesk = Depends(annotation_desk)):
    """Every accepted and rejected suggestion of the batch's latest annotations, and the share accepted."""
    table = await asyncio.to_thread(desk.decisions, batch)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    accepted = sum(r["decision"] == "accepted" for r in rows)
    return {"decisions": rows, "accepted": accepted, "rejected": len(rows) - accepted,
            "accepted_share": accepted / len(rows) if rows else None}


@router.get(BATCH + "/points.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
async def export_points(batch: str, name: str = Depends(labeler), desk: AnnotationDesk = Depends(annotation_desk)):
    """The batch's point marks as points.csv (image,x,y,label): upload it with the batch to get the same rows."""
    text = await asyncio.to_thread(desk.points_csv, batch)
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{batch}-points.csv"'})


@router.get(BATCH + "/voc", response_class=Response, responses={200: {"content": {"application/xml": {}}}})
async def export_voc(batch: str, image: str = Query(max_length=1000), name: str = Depends(labeler),
                     desk: AnnotationDesk = Depends(annotation_desk)):
    """One image's boxes as a LabelImg Pascal VOC XML file."""
    xml = await asyncio.to_thread(desk.voc_xml, batch, image)
    return Response(xml, media_type="application/xml")


@router.get(BATCH + "/voc.zip", response_class=Response, responses={200: {"content": {"application/zip": {}}}})
async def export_voc_zip(batch: str, name: str = Depends(labeler), desk: AnnotationDesk = Depends(annotation_desk)):
    """Every image's boxes as LabelImg XML files (one per image, beside the image's path), zipped."""
    data = await asyncio.to_thread(desk.voc_zip, batch)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{batch}-voc.zip"'})
