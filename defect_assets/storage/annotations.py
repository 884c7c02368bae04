"""Annotations drawn on a photo in the annotation view: defect points and boxes with a class, or
the explicit answer "no defect here", plus the model's suggestions the person accepted or
rejected.

Append-only like the label events of ``storage.labeling``, with no lock anywhere: every save is
one immutable object ``labeling/marks/<batch>/<id>.json`` holding the image's whole set of marks
as the person left it; its id is a hash of what it says (and of the annotation it replaces,
``after``), written with ``write_new`` (create-if-absent). So the same save retried is one object,
two labelers saving at once never write the same object, and nothing is ever overwritten: the
latest annotation of an image counts, the older ones are its history. Nothing here knows about
Dagster or HTTP.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import pandas as pd

from defect_assets.storage.base import ObjectStore
from defect_assets.storage.event_log import EventLog, content_hash
from defect_assets.storage.labeling import MARKS

MARK_KINDS = ("point", "box")
DECISIONS = ("accepted", "rejected")
MARK_TABLE_COLUMNS = ["event_id", "batch", "image", "image_id", "labeler", "annotated_at", "kind", "label", "x", "y",
                      "xmin", "ymin", "xmax", "ymax"]
"""One row per mark of the latest annotation of each image (kind point/box), and one row of kind
``none`` for an image answered "no defect here"."""
DECISION_TABLE_COLUMNS = ["event_id", "batch", "image", "labeler", "annotated_at", "model_version", "x", "y", "score",
                          "label", "decision"]


@dataclass(frozen=True)
class Annotation:
    """One save of the annotation view. ``marks``: dicts ``{kind: point, label, x, y}`` or
    ``{kind: box, label, xmin, ymin, xmax, ymax}`` (image pixels); ``suggestions``: the model's
    proposals the person decided on, ``{x, y, score, label, decision}``; ``model_version``: the
    model that proposed them ("" when none were shown)."""

    batch: str
    image: str
    image_id: str
    labeler: str
    marks: tuple = ()
    no_defect: bool = False
    suggestions: tuple = ()
    model_version: str = ""
    after: str = ""
    """The id of the annotation of this image that this one replaces ("" for the first)."""
    at: str = field(default="", compare=False)

    def __post_init__(self):
        if self.no_defect and self.marks:
            raise ValueError("'no defect here' and marks contradict each other")
        for m in self.marks:
            if m.get("kind") not in MARK_KINDS:
                raise ValueError(f"a mark is one of {MARK_KINDS}, not {m.get('kind')!r}")
        for s in self.suggestions:
            if s.get("decision") not in DECISIONS:
                raise ValueError(f"a suggestion is {' or '.join(DECISIONS)}, not {s.get('decision')!r}")

    @property
    def id(self) -> str:
        return content_hash(self)

    @property
    def key(self) -> str:
        return f"{MARKS}/{self.batch}/{self.id}.json"

    def same_answer(self, other: Annotation) -> bool:
        """Whether two saves say the same about the image (a retried save)."""
        return (self.image_id, self.labeler, self.marks, self.no_defect, self.suggestions, self.model_version) == (
            other.image_id, other.labeler, other.marks, other.no_defect, other.suggestions, other.model_version)

    def to_doc(self) -> dict:
        return {**asdict(self), "marks": list(self.marks), "suggestions": list(self.suggestions), "id": self.id}

    def to_json(self) -> bytes:
        return json.dumps(self.to_doc(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Annotation:
        doc = json.loads(data)
        doc.pop("id", None)
        doc["marks"] = tuple(doc.get("marks") or ())
        doc["suggestions"] = tuple(doc.get("suggestions") or ())
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})


class MarkLog(EventLog[Annotation]):
    """The append-only annotations of one artifact store (``storage.event_log``; reads cached per
    object: they never change). ``append`` stores an annotation unless the same one exists:
    (the stored one, True if this call stored it)."""

    def __init__(self, store: ObjectStore):
        super().__init__(store, MARKS, Annotation)

    def annotations(self, batch: str | None = None) -> list[Annotation]:
        """Every annotation (of one batch, or all), oldest first."""
        return self.events(batch)

    def history(self, batch: str, image: str) -> list[Annotation]:
        return [a for a in self.annotations(batch) if a.image == image]

    def latest(self, batch: str | None = None) -> dict[tuple[str, str], Annotation]:
        """(batch, image) -> the annotation that counts: the latest saved."""
        return {(a.batch, a.image): a for a in self.annotations(batch)}

    def marks(self, batch: str | None = None) -> pd.DataFrame:
        """The latest annotation of every image as rows (``MARK_TABLE_COLUMNS``)."""
        rows = []
        for a in self.latest(batch).values():
            base = {"event_id": a.id, "batch": a.batch, "image": a.image, "image_id": a.image_id,
                    "labeler": a.labeler, "annotated_at": a.at}
            if a.no_defect:
                rows.append({**base, "kind": "none", "label": ""})
            for m in a.marks:
                rows.append({**base, **{k: m.get(k) for k in ("kind", "label", "x", "y", "xmin", "ymin", "xmax",
                                                                 "ymax")}})
        df = pd.DataFrame(rows, columns=MARK_TABLE_COLUMNS)
        for c in ("x", "y", "xmin", "ymin", "xmax", "ymax"):
            df[c] = df[c].astype("float64")
        for c in MARK_TABLE_COLUMNS:
            if c not in ("x", "y", "xmin", "ymin", "xmax", "ymax"):
                df[c] = df[c].astype("string")
        return df

    def decisions(self, batch: str | None = None) -> pd.DataFrame:
        """Every suggestion decision of the latest annotations: how often the model's proposals were right."""
        rows = [{"event_id": a.id, "batch": a.batch, "image": a.image, "labeler": a.labeler, "annotated_at": a.at,
                 "model_version": a.model_version, **{k: s.get(k) for k in ("x", "y", "score", "label", "decision")}}
                for a in self.latest(batch).values() for s in a.suggestions]
        return pd.DataFrame(rows, columns=DECISION_TABLE_COLUMNS)
