"""The service's JSON shapes: every JSON route declares one of these as its ``response_model``,
so FastAPI validates and serializes what a handler returns through it (a key a model does not
have is never sent) and /openapi.json describes the answers as they are. Errors are
``ErrorResponse`` (``serving.errors``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    window: int = Field(description="window side = the model's patch size (each window is shrunk to its "
                                    "input size as training patches were)")
    stride: int
    windows: int
    threshold: float
    decision: str = Field(description="the photo's decision from what was located: the strongest located defect's "
                                      "class, else the non-defect class (what the prediction log records)")
    is_defect: bool = Field(description="true when at least one defect was located (a window >= threshold)")
    max_window_score: float = Field(description="the largest window defect probability")
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


# --- the labeling page's API (/v1/labeling) ---

class LabelingProgress(BaseModel):
    items: int
    labeled: int
    skipped: int
    remaining: int
    done: int = Field(description="labeled + skipped")


class QueueItem(BaseModel):
    item_id: str
    rank: int
    batch: str
    image: str
    width: int
    height: int
    status: str = Field(description="todo, labeled or skipped")
    label: str | None = Field(description="the stored label (by anyone), if labeled")
    labeled_by: str | None
    guess: str = Field(description="the queue model's most probable class")
    guess_probability: float
    probabilities: dict[str, float]
    strategy: str = Field(description="why the item was queued (the sampling strategy)")
    score: float = Field(description="the strategy's score of the item")
    model_version: str = Field(description="the model that scored the queue")
    image_url: str
    heatmap_url: str | None = Field(description="null: the queue's model scores whole images")


class QueueView(BaseModel):
    queue: str
    created: str | None
    strategy: str | None
    diversity: bool
    model_version: str
    classes: list[str]
    labeler: str = Field(description="who is asking")
    progress: LabelingProgress
    can_undo: bool
    next: QueueItem | None = Field(description="the next item to label (null: the queue is done)")
    items: list[QueueItem]


class LabelEventDoc(BaseModel):
    id: str
    kind: str = Field(description="label, skip or undo")
    queue: str
    item: str
    batch: str
    image: str
    image_id: str
    labeler: str
    model_version: str
    label: str
    target: str = Field(description="undo: the id of the event it retracts")
    after: str
    at: str


class LabelAnswer(BaseModel):
    event: LabelEventDoc
    stored: bool = Field(description="false: the same event was already stored (answered 200, not 201)")
    progress: LabelingProgress
    next: QueueItem | None
    can_undo: bool


class UndoAnswer(LabelAnswer):
    restored: QueueItem = Field(description="the item given back")


class StoredLabel(BaseModel):
    event_id: str | None
    batch: str | None
    image: str | None
    image_id: str | None
    label: str | None
    labeler: str | None
    labeled_at: str | None
    model_version: str | None
    queue: str | None
    item: str | None


class StoredLabels(BaseModel):
    labels: list[StoredLabel]
    count: int


# --- the annotation view's API (/v1/annotations) ---

class BatchSummary(BaseModel):
    batch: str
    images: int
    annotated: int
    needs_marks: int = Field(0, description="images neither annotated nor labeled by the batch's own files")


class Batches(BaseModel):
    batches: list[BatchSummary]


class ListedImage(BaseModel):
    image: str
    width: int
    height: int
    marks: int
    no_defect: bool
    annotated: bool
    labeler: str | None
    needs_marks: bool = Field(False, description="neither annotated nor labeled by the batch's own files")


class BatchListing(BaseModel):
    batch: str
    classes: list[str]
    images: list[ListedImage]
    annotated: int
    needs_marks: int = 0


class PointMark(BaseModel):
    kind: Literal["point"]
    label: str
    x: float
    y: float


class BoxMark(BaseModel):
    kind: Literal["box"]
    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float


Mark = Annotated[PointMark | BoxMark, Field(discriminator="kind")]


class FileMark(BaseModel):
    """A point or box of the batch's own label files (the coordinates of the other kind are null)."""
    kind: str
    label: str | None = None
    x: float | None = None
    y: float | None = None
    xmin: float | None = None
    ymin: float | None = None
    xmax: float | None = None
    ymax: float | None = None


class Decision(BaseModel):
    x: float
    y: float
    score: float
    label: str
    decision: str = Field(description="accepted or rejected")


class AnnotationDoc(BaseModel):
    id: str
    batch: str
    image: str
    image_id: str
    labeler: str
    marks: list[Mark]
    no_defect: bool
    suggestions: list[Decision]
    model_version: str
    after: str = Field(description="the id of the annotation it replaces (\"\" for the first)")
    at: str


class MarksView(BaseModel):
    batch: str
    image: str
    image_id: str
    width: int
    height: int
    classes: list[str]
    annotation: AnnotationDoc | None = Field(description="the latest annotation (null: none yet)")
    versions: int
    stale: bool = Field(description="the latest annotation was drawn on other bytes under this name")
    file_labels: int = Field(description="rows of the batch's own label files for this image (they win)")
    file_marks: list[FileMark]


class SavedMarks(BaseModel):
    annotation: AnnotationDoc
    stored: bool = Field(description="false: the same as the latest (answered 200, not 201)")


class Suggestion(BaseModel):
    x: float
    y: float
    score: float
    label: str


class Suggestions(BaseModel):
    model_version: str
    threshold: float
    window: int = Field(description="window side = the model's patch size")
    suggestions: list[Suggestion] = Field(description="strongest first")
    heatmap_png: str = Field(description="base64 PNG, 8-bit gray, 255 = probability 1")
    heatmap_scale: int


class DecisionRow(BaseModel):
    event_id: str | None
    batch: str | None
    image: str | None
    labeler: str | None
    annotated_at: str | None
    model_version: str | None
    x: float | None
    y: float | None
    score: float | None
    label: str | None
    decision: str | None


class Decisions(BaseModel):
    decisions: list[DecisionRow]
    accepted: int
    rejected: int
    accepted_share: float | None = Field(description="null: no decision yet")


# --- the dashboard's data ---

class DashboardSummary(BaseModel):
    """Everything the dashboard draws; a missing section is null, with a note in ``notes``."""
    model_config = ConfigDict(extra="forbid")
    generated_at: str
    store: str
    quality: dict[str, Any] | None
    champions: dict[str, Any] | None
    batches: dict[str, Any] | None
    monitoring: dict[str, Any] | None
    mistakes: dict[str, Any] | None
    active_learning: ActiveLearningPanel | None
    label_issues: LabelIssuesPanel | None
    labelers: LabelersPanel | None
    notes: dict[str, str]


ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (401, 413, 415, 422, 503)}
"""The error answers of the model routes, for the OpenAPI document."""


# --- the labeling page's instructions, practice round and options (routes.practice) ---


class Instructions(BaseModel):
    markdown: str = Field(description="the project owner's instructions (markdown; empty when none is written)")
    source: str | None = Field(description="the artifact-store key they were read from")


class PracticeItem(BaseModel):
    item_id: str
    batch: str
    image: str
    width: int
    height: int
    classes: list[str]
    image_url: str


class PracticeItems(BaseModel):
    items: list[PracticeItem]
    available: int = Field(description="images with a known label: the gold set's, else all ingested batches'")
    source: Literal["gold", "label_files"] = Field(description="gold: the gold set (labeling/gold/items.parquet); "
                                                               "label_files: the batches' own label files")


class PracticeFeedback(BaseModel):
    item_id: str
    label: str = Field(description="the labeler's answer")
    known: str = Field(description="the known label (the gold set's, else the batch's own label files')")
    agreed: bool


class DeskOptions(BaseModel):
    show_guess: bool = Field(description="show the model's guess at once (DEFECT_ASSETS_LABEL_SHOW_GUESS); "
                                         "false: hidden until the labeler asks")


class NavLinks(BaseModel):
    dagster_ui_url: str | None = Field(description="the Dagster UI's address (null: not configured)")


# --- label quality: the review queue, the labelers, the dashboard's panels (issue 24) ---

class LabelerQuality(BaseModel):
    labeler: str
    labeled: int = Field(description="images labeled on the labeling page (gold answers not counted)")
    gold_answered: int = Field(description="gold items this labeler answered")
    gold_agreement: float | None = Field(description="share of the gold answers equal to the gold label (null: none)")
    kappa_vs_others: float | None = Field(description="mean Cohen's kappa against each other labeler on the images "
                                                      "both labeled (at least 2); null: no such labeler")
    kappa_pairs: int = Field(description="other labelers the mean is over")


class Labelers(BaseModel):
    labelers: list[LabelerQuality]


class ReviewItem(BaseModel):
    item_id: str
    rank: int
    batch: str
    image: str
    given_label: str
    source: str
    labeler: str
    image_url: str
    suggested_label: str | None = Field(None, description="the out-of-fold model's label (only with ?suggest=true)")
    self_confidence: float | None = Field(None, description="its probability of the given label (?suggest=true)")


class ReviewItems(BaseModel):
    classes: list[str]
    reviewed: int = Field(description="images already reviewed (never asked again)")
    items: list[ReviewItem] = Field(description="the suspects nobody reviewed yet, worst first")


class ReviewAnswer(BaseModel):
    event: LabelEventDoc
    stored: bool = Field(description="false: the same decision was already stored (answered 200)")
    remaining: int


class LabelIssueShown(BaseModel):
    item_id: str
    rank: int
    batch: str
    image: str
    given_label: str
    suggested_label: str
    self_confidence: float | None = Field(description="out-of-fold probability of the given label")
    source: str = Field(description="where the label came from (labels.csv, class folders, labeling page, ...)")
    labeler: str | None
    image_url: str = Field(description="the photo (GET, PNG or JPEG)")
    review_url: str = Field(description="the review queue on the labeling page")


class LabelIssuesPanel(BaseModel):
    images: int = Field(description="labeled images in the latest label_issues table")
    issues: int = Field(description="suspects (cleanlab's label issues) among them")
    shown: list[LabelIssueShown] = Field(description="the worst suspects: lowest self-confidence first")
    columns: list[str]
    review_url: str
    note: str | None = Field(description="why nothing is shown, when nothing is")
    downloads: dict[str, str]


class ActiveLearningPanel(BaseModel):
    rows: list[dict[str, Any]] = Field(description="active_learning/progress.csv, one row per labeling round, with "
                                                   "labels_given read from the label store now")
    columns: list[str]
    x: str = Field(description="the round column (whole numbers)")
    counts: list[str] = Field(description="count columns (drawn on one chart)")
    rates: list[str] = Field(description="0..1 columns: accuracy, ROC AUC (drawn on another)")
    names: dict[str, str] = Field(description="column -> what the chart calls it")
    page_labels_now: int = Field(description="active labels given on the labeling page so far (every queue)")
    empty: dict[str, str] = Field(description="chart (counts, rates) -> why it has nothing to draw")
    downloads: dict[str, str]


class LabelersPanel(BaseModel):
    rows: list[LabelerQuality]
    columns: list[str]
    gold_items: int = Field(description="items in the gold set (labeling/gold/items.parquet)")
    note: str | None = Field(description="what is missing for the gold figures, when nobody answered gold")
    downloads: dict[str, str]


DashboardSummary.model_rebuild()
