"""The service's JSON shapes, for the OpenAPI document (/openapi.json) and for clients
that want to validate what they get. Handlers build plain dicts of exactly these shapes."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    error: str = Field(description="a short machine-readable code, e.g. payload_too_large, image_rejected")
    detail: str = Field(description="what was wrong, for a person")


class ImageResult(BaseModel):
    filename: str | None = Field(description="the upload's file name, as sent")
    sha256: str = Field(description="sha256 of the uploaded bytes")
    probabilities: dict[str, float] = Field(description="class -> probability (they sum to 1)")
    decision: str = Field(description="binary: the defect class when its probability >= threshold; else arg-max")
    is_defect: bool
    defect_score: float = Field(description="probability of any defect class")
    model_version: str = Field(description="the model version that scored this image")


class PredictResponse(BaseModel):
    model_version: str
    threshold: float | None = Field(description="production threshold on the defect probability; null: arg-max")
    results: list[ImageResult]


class Defect(BaseModel):
    x: float = Field(description="column of the defect center, pixels")
    y: float = Field(description="row of the defect center, pixels")
    score: float = Field(description="defect probability of the strongest window there")
    kind: str | None = Field(default=None, description="multi-class models: the most likely defect class")


class Grid(BaseModel):
    columns: int
    rows: int
    x: list[int] = Field(description="window center columns")
    y: list[int] = Field(description="window center rows")


class InspectResponse(BaseModel):
    model_version: str
    sha256: str
    width: int
    height: int
    window: int = Field(description="window side = the model's input size")
    stride: int
    windows: int
    threshold: float
    grid: Grid
    scores: list[list[float]] = Field(description="defect probability per window, grid rows x grid columns")
    defects: list[Defect] = Field(description="windows >= threshold after non-maximum suppression, strongest first")
    heatmap_png: str | None = Field(description="base64 PNG, 8-bit gray, 255 = probability 1 (null if not asked)")
    heatmap_scale: int = Field(description="heatmap pixel = this many photo pixels per side (1 up to 4 MP)")


class ModelInfo(BaseModel):
    model_version: str
    family: str
    task: str
    classes: list[str]
    input: dict
    threshold: float | None
    decision: str
    promoted: str | None
    loaded_at: str
    created: str | None
    validation: dict = Field(description="validation metrics recorded at training")
    test: dict | None = Field(description="test-split metrics recorded at promotion, when known")
    data_version: dict = Field(description="lineage: batches and label versions the model was trained on")
    config: dict
    last_reload_error: dict | None
    reloads: int
    batching: dict
    prediction_log: dict | None = Field(None, description="records written, segments, records still pending a "
                                                          "flush (null: no prediction log is kept)")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model_version: str
    last_reload_error: dict | None


ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (401, 413, 415, 422, 503)}
"""The error answers of the model routes, for the OpenAPI document."""
