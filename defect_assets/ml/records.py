"""The model card and the evaluation report as typed, versioned records (pydantic, no Dagster):
what training writes next to a model (``card.json``) and what evaluation writes next to its
HTML (``report.json``), read by attribute everywhere (``card.validation.roc_auc``,
``report.confusion_matrix``), so a renamed field fails where the record is loaded, with the
field's name, and not far away as a ``KeyError``.

The stored JSON keeps its keys: ``to_dict`` gives back exactly the keys a record was made from
(what an older card lacks stays absent, unknown keys are kept), plus ``schema_version``.
Version 1 is every card and report stored before the key existed (the shapes of the ``keras``,
``features+linear`` and ``ensemble`` kinds, with or without ``inference``, ``golden``, a
backbone name in ``features``, intervals or latency in a report); version 2 has the same keys
and says so. What an older record lacks is optional here, with the default the readers assumed
(one test-time view, the VGG16 backbone)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CARD_SCHEMA = 2
REPORT_SCHEMA = 2
STORED_BEFORE_VERSIONS = 1
"""The schema version of a record stored without ``schema_version`` (written before this module)."""


class RecordError(ValueError):
    """A stored card or report that does not have the shape of its record (the message names the field)."""


def _problems(error: ValidationError) -> str:
    out = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"])
        out.append(f"missing field {where!r}" if e["type"] == "missing" else f"field {where!r}: {e['msg']}")
    return "; ".join(out)


class Part(BaseModel):
    """A nested part of a record: keys it does not name are kept (written by other code versions)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True)


class Record(Part):
    """A versioned top-level record: ``from_dict`` for what was stored, ``create`` for a new one."""

    SCHEMA: ClassVar[int] = 0
    NAME: ClassVar[str] = "record"
    schema_version: int

    @classmethod
    def _validate(cls, doc: dict[str, Any]) -> Self:
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            label = doc.get("version") or doc.get("evaluation_id") or "?"
            raise RecordError(f"{cls.NAME} {label}: {_problems(e)}") from None

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | Self) -> Self:
        """A record as stored, by this code or older code (no ``schema_version``: version 1)."""
        if isinstance(doc, cls):
            return doc
        if not isinstance(doc, dict):
            raise RecordError(f"a {cls.NAME} is a JSON object, not {type(doc).__name__}")
        version = doc.get("schema_version", STORED_BEFORE_VERSIONS)
        if not isinstance(version, int) or not 1 <= version <= cls.SCHEMA:
            raise RecordError(f"{cls.NAME} {doc.get('version') or doc.get('evaluation_id') or '?'} has schema "
                              f"version {version!r}; this code reads 1 to {cls.SCHEMA} (written by newer code?)")
        return cls._validate({**doc, "schema_version": version})

    @classmethod
    def create(cls, fields: dict[str, Any]) -> Self:
        """A new record of the current schema from its fields."""
        return cls._validate({**fields, "schema_version": cls.SCHEMA})

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict: the keys it was made from, ``schema_version`` included."""
        return {**super().to_dict(), "schema_version": self.schema_version}


# --- the model card ---

class InputSpec(Part):
    size: int
    """Side of the model's square input, in pixels."""
    channels: int
    patch_size: int | None = None
    """Side of the patches it was trained from when larger than ``size`` (they are shrunk to it)."""


class DataVersion(Part):
    """Which batches and label versions a model saw (or an evaluation used)."""

    id: str
    batches: list[str]
    label_versions: dict[str, Any] = Field(default_factory=dict)


class Validation(Part):
    """Metrics on the validation split at training (``ml.metrics.summary_metrics``)."""

    accuracy: float
    balanced_accuracy: float
    log_loss: float
    roc_auc: float

    def get(self, metric: str, default: float = float("nan")) -> float:
        """A metric by name (a setting names the one the champion is picked by)."""
        value = self.to_dict().get(metric, default)
        return default if value is None else float(value)


class Inference(Part):
    views: int = 1
    """Test-time views averaged by the scorer (1, 2, 4 or 8)."""


class FeatureSpec(Part):
    """The frozen backbone of a features+linear model (``ml.backbone.make_extractor`` reads
    ``to_dict()``); cards written before the EfficientNet backbone have blocks and weights only."""

    backbone: str = "vgg16"
    blocks: list[Any] | None = None
    stages: list[str] | None = None
    weights: str | None = None
    runtime: str | None = None


class Golden(Part):
    """The golden patches and what the in-memory model predicted on them at training."""

    patch_ids: list[str] = Field(default_factory=list)
    proba: list[list[float]] = Field(default_factory=list)


class ModelCard(Record):
    """What the registry stores with every model version (``models/<family>/<version>/card.json``)."""

    SCHEMA = CARD_SCHEMA
    NAME = "model card"
    schema_version: int = CARD_SCHEMA
    version: str
    kind: str
    """How the scorer is built from the files: ``keras``, ``features+linear`` or ``ensemble`` so far
    (a string, so a new family's kind needs no edit here; ``ml.scorer`` refuses one it does not know)."""
    task: Literal["binary", "multiclass"]
    classes: list[str]
    input: InputSpec
    family: str = ""
    """Set by the registry (empty on a card not registered yet)."""
    created: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    """File name -> sha256 of every artifact file of the version."""
    config: dict[str, Any] = Field(default_factory=dict)
    data_version: DataVersion | None = None
    validation: Validation | None = None
    training_seconds: float | None = None
    inference: Inference = Field(default_factory=Inference)
    golden: Golden | None = None
    # family-specific
    features: FeatureSpec | None = None
    """features+linear: the backbone the head reads."""
    nonzero_features: int | None = None
    trials: list[dict[str, Any]] | None = None
    """The hyperparameter trials (or the ensemble's weightings) and their validation figures."""
    members: list[str] | None = None
    """ensemble: the member versions, averaged with ``weights``."""
    weights: list[float] | None = None
    params: int | None = None
    """keras: trainable and frozen parameters."""
    images_per_second: float | None = None
    training_images_seen: int | None = None
    warm_start_from: str | None = None


# --- the evaluation report ---

class Curve(Part):
    x: list[float]
    y: list[float]


class PerClass(Part):
    class_name: str = Field(alias="class")
    precision: float
    recall: float
    f1: float
    support: int
    roc_auc_ovr: float


class EvaluationReport(Record):
    """One evaluation of a model on the test split (``evaluations/<family>/<id>/report.json``);
    ``pipeline.evaluate.history_row`` is its row in the evaluation history."""

    SCHEMA = REPORT_SCHEMA
    NAME = "evaluation report"
    schema_version: int = REPORT_SCHEMA
    # in the order evaluation writes them (ml.evaluation.binary_report, then pipeline.evaluate)
    task: Literal["binary", "multiclass"]
    threshold: float | None = None
    """Binary: the defect threshold chosen on validation (absent for arg-max)."""
    n: int
    """Test patches."""
    positives: int | None = None
    accuracy: float
    balanced_accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float | None = None
    confusion_matrix: list[list[int]]
    # added with issue 10 (reports before have none)
    majority_baseline: float | None = None
    accuracy_ci: list[float] | None = None
    roc_auc_ci: list[float] | None = None
    roc_curve: Curve | None = None
    pr_curve: Curve | None = None
    per_class: list[PerClass] | None = None
    """Multi-class: precision, recall, F1 and one-vs-rest ROC AUC of each class."""
    ovr_roc_curves: dict[str, Curve] | None = None
    evaluation_id: str
    evaluated_at: str
    model_version: str
    model_family: str
    classes: list[str]
    data_version: DataVersion
    """The data evaluated on."""
    trained_on: DataVersion
    threshold_method: str
    validation_at_training: Validation
    # added with issue 18
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_runs: int | None = None
    # added with issue 25 (reports before, and reports with no grouping named, have none)
    groups: list[dict[str, Any]] | None = None
    """Per group of each named grouping: accuracy, recall, ROC AUC with 95% intervals and the
    group's majority baseline (``ml.groups.group_metrics``)."""
    report_json: str
    report_html: str

    @property
    def binary(self) -> bool:
        return self.task == "binary"
