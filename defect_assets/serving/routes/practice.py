"""The labeling page's instructions and practice round (``serving.practice``): GET
/v1/labeling/instructions, GET /v1/labeling/practice and POST /v1/labeling/practice/answers. A
practice answer is compared with the known label and never stored. Every route needs a labeler token."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from defect_assets.serving.dependencies import labeler, service
from defect_assets.serving.practice import PRACTICE_ITEMS, PracticeRound, instructions
from defect_assets.serving.schemas import DeskOptions, Instructions, NavLinks, PracticeFeedback, PracticeItems
from defect_assets.serving.state import ServiceState
from defect_assets.serving.web import stored_image

router = APIRouter(tags=["labeling"])


class PracticeRequest(BaseModel):
    item_id: str = Field(max_length=64)
    label: str = Field(max_length=200)


@router.get("/v1/labeling/instructions", response_model=Instructions)
async def read_instructions(batch: str | None = Query(None, max_length=200), name: str = Depends(labeler),
                            state: ServiceState = Depends(service)):
    """How to tell the classes apart: ``labeling/instructions/<batch>.md``, else ``labeling/instructions.md``."""
    return await asyncio.to_thread(instructions, state.settings.store, batch)


@router.get("/v1/labeling/practice", response_model=PracticeItems)
async def practice_items(limit: int = Query(PRACTICE_ITEMS, ge=1, le=50), name: str = Depends(labeler),
                         state: ServiceState = Depends(service)):
    """Images whose label is known (the gold set when one exists, else the batches' own label files), for a
    practice round."""
    return await asyncio.to_thread(PracticeRound(state.annotation).items, limit)


@router.post("/v1/labeling/practice/answers", response_model=PracticeFeedback)
async def practice_answer(body: PracticeRequest, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """Whether the answer agrees with the known label (nothing is stored)."""
    return await asyncio.to_thread(PracticeRound(state.annotation).answer, body.item_id, body.label)


@router.get("/v1/labeling/practice/{item_id}/image", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
async def practice_image(item_id: str, name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """A gold practice item's photo, as stored (label-file items use the annotation page's image route)."""
    def run():
        key = PracticeRound(state.annotation).stored_key(item_id)
        return stored_image(state.settings.store, key, state.settings.max_pixels)

    return await asyncio.to_thread(run)


@router.get("/v1/labeling/options", response_model=DeskOptions)
async def desk_options(name: str = Depends(labeler), state: ServiceState = Depends(service)):
    """How the labeling page starts: whether the model's guess is shown before the labeler asks."""
    return {"show_guess": state.settings.label_show_guess}


@router.get("/v1/nav", response_model=NavLinks, tags=["pages"])
async def nav_links(state: ServiceState = Depends(service)):
    """What every page's navigation bar adds to its fixed links (common.js): the Dagster UI's address when
    DEFECT_ASSETS_DAGSTER_UI_URL is set. Open, like the pages themselves."""
    return {"dagster_ui_url": state.settings.dagster_ui_url}
