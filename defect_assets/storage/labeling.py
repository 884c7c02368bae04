"""Where active learning keeps its data in the artifact store: labeling queues and label events.

Label events are append-only with no lock anywhere: each event (a label, a skip, or an undo that
retracts one of them) is one immutable object ``labeling/events/<batch>/<id>.json`` whose id is a
hash of what it says (kind, queue item, image, label, labeler, and the undo it follows), written
with ``write_new`` (create-if-absent). So the same label submitted twice is one object, two
labelers writing at once never touch the same object, and a reader merges by listing:

- an event is *active* unless an undo names it;
- re-labeling after an undo is a new event (it names the undo it follows, ``after``), so the
  chain label -> undo -> label keeps three distinct objects and loses none;
- a label's key is its *slot* (the hash without the label): one labeler, one item, between two
  undos, has one key, so of two different labels posted at once exactly one is stored (the other
  gets "undo first"), on a local disk (a hard link) and on Azure Blob (If-None-Match: *) alike.

Queues are immutable too: ``labeling/queues/<queue>/items.parquet`` + ``queue.json``, and
``labeling/current_queue.json`` (one atomic write) names the queue the labeling page serves.
Nothing here knows about Dagster or HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

import pandas as pd

from defect_assets.storage.base import ObjectStore, StoreKeyError
from defect_assets.storage.event_log import EventLog, content_hash, utc_now
from defect_assets.storage.formats import read_json, read_table, write_json, write_table

ROOT = "labeling"
EVENTS = f"{ROOT}/events"
MARKS = f"{ROOT}/marks"
"""Annotations drawn on the photo (points, boxes, "no defect here"): ``storage.annotations``."""
QUEUES = f"{ROOT}/queues"
CURRENT_QUEUE = f"{ROOT}/current_queue.json"
EVENT_KINDS = ("label", "skip", "undo")
LABEL_TABLE_COLUMNS = ["event_id", "batch", "image", "image_id", "label", "labeler", "labeled_at", "model_version",
                       "queue", "item"]


@dataclass(frozen=True)
class LabelEvent:
    """One thing a labeler did. ``at`` is when it was first stored; it is not part of the id, so
    a retried submission is the same event."""

    kind: str
    queue: str
    item: str
    batch: str
    image: str
    image_id: str
    labeler: str
    model_version: str
    """The model whose guess the labeler saw (the queue's scorer)."""
    label: str = ""
    target: str = ""
    """undo: the id of the event it retracts."""
    after: str = ""
    """label/skip: the id of the labeler's latest undo on this item ("" if none)."""
    at: str = field(default="", compare=False)

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, not {self.kind!r}")
        if (self.kind == "label") != bool(self.label):
            raise ValueError("a label event needs a label; skip and undo events have none")
        if (self.kind == "undo") != bool(self.target):
            raise ValueError("an undo event names the event it retracts; others do not")

    @property
    def id(self) -> str:
        return content_hash(self)

    @property
    def slot(self) -> str:
        """Labels: a hash of everything but the label (queue, item, labeler, the undo it follows).
        One labeler's label of one item, between two undos, has one slot whatever the label says,
        so two different labels posted at once race for one key and the second loses."""
        return "L" + content_hash(self, ("at", "label"), 31)

    @property
    def key(self) -> str:
        # a label's key is its slot: the "one active label per labeler per item (undo first)" rule is
        # the create-if-absent write itself, never a read-then-write
        return f"{EVENTS}/{self.batch}/{self.slot if self.kind == 'label' else self.id}.json"

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "id": self.id}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LabelEvent:
        doc = json.loads(data)
        doc.pop("id", None)
        return cls(**{f.name: doc.get(f.name, "") for f in fields(cls)})


def active_events(events: list[LabelEvent]) -> list[LabelEvent]:
    """Label and skip events that no undo retracts, oldest first."""
    retracted = {e.target for e in events if e.kind == "undo"}
    return [e for e in events if e.kind != "undo" and e.id not in retracted]


class LabelLog(EventLog[LabelEvent]):
    """The append-only label events of one artifact store (``storage.event_log``): ``append``
    stores an event unless one exists at its key and returns (the stored event, True if this call
    stored it); for a label the stored event may say another label (the slot was taken first):
    callers compare ``stored.id`` with ``event.id``. ``keys`` and ``events`` list them."""

    def __init__(self, store: ObjectStore):
        super().__init__(store, EVENTS, LabelEvent)

    def digests(self) -> dict[str, str]:
        """Batch -> a short hash of which events it has, labels and annotations (``MARKS``) alike
        (two listings): it changes exactly when an event of that batch is added. Batches without
        events are absent; a batch without annotations keeps the digest it had before they existed."""
        by_batch: dict[str, list[str]] = {}
        marks = [o.key for o in self.store.list(f"{MARKS}/") if o.key.endswith(".json")]
        for key in self.keys() + marks:
            by_batch.setdefault(key.split("/", 3)[2], []).append(key)
        return {b: hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16] for b, keys in sorted(by_batch.items())}

    def labels(self, batch: str | None = None) -> pd.DataFrame:
        """The active labels (one row per stored, not retracted label event), oldest first."""
        rows = [{"event_id": e.id, "batch": e.batch, "image": e.image, "image_id": e.image_id, "label": e.label,
                 "labeler": e.labeler, "labeled_at": e.at, "model_version": e.model_version, "queue": e.queue,
                 "item": e.item}
                for e in active_events(self.events(batch)) if e.kind == "label"]
        return pd.DataFrame(rows, columns=LABEL_TABLE_COLUMNS).astype("string")


@dataclass(frozen=True)
class LabelingQueue:
    """One published queue: its document (id, strategy, model version, classes, ...) and items."""

    doc: dict
    items: pd.DataFrame

    @property
    def id(self) -> str:
        return self.doc["queue"]

    @property
    def classes(self) -> list[str]:
        return list(self.doc["classes"])

    @property
    def model_version(self) -> str:
        return self.doc["model_version"]

    def item(self, item_id: str) -> dict | None:
        hit = self.items[self.items["item_id"] == item_id]
        return hit.iloc[0].to_dict() if len(hit) else None


def publish_queue(store: ObjectStore, items: pd.DataFrame, doc: dict) -> LabelingQueue:
    """Store a new queue (items table + document), then point ``current_queue.json`` at it (the
    one commit point: a crash before it leaves the old queue current)."""
    content = hashlib.sha256(items.to_csv(index=False).encode() + json.dumps(doc, sort_keys=True,
                                                                             default=str).encode()).hexdigest()
    queue_id = f"q-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')[:-3]}-{content[:8]}"
    full = {**doc, "queue": queue_id, "created": utc_now(), "items": len(items),
            "table": f"{QUEUES}/{queue_id}/items.parquet"}
    write_table(store, full["table"], items)
    write_json(store, f"{QUEUES}/{queue_id}/queue.json", full)
    write_json(store, CURRENT_QUEUE, {"queue": queue_id, "document": f"{QUEUES}/{queue_id}/queue.json"})
    return LabelingQueue(full, items)


def read_queue(store: ObjectStore, queue_id: str) -> LabelingQueue:
    try:
        doc = read_json(store, f"{QUEUES}/{queue_id}/queue.json")
    except StoreKeyError:
        raise StoreKeyError(f"no labeling queue {queue_id!r} in {store.url}") from None
    return LabelingQueue(doc, read_table(store, doc["table"]))


def current_queue_id(store: ObjectStore) -> str | None:
    return read_json(store, CURRENT_QUEUE)["queue"] if store.exists(CURRENT_QUEUE) else None


def current_queue(store: ObjectStore) -> LabelingQueue | None:
    """The queue the labeling page serves, or None before the first labeling_queue run."""
    queue_id = current_queue_id(store)
    return read_queue(store, queue_id) if queue_id else None


GOLD_ITEMS = f"{ROOT}/gold/items.parquet"
"""Items with known labels (gold) that labeling queues mix in: POOL columns + ``label``."""
GOLD_ANSWERS = f"{ROOT}/gold_answers"
"""Labelers' answers to gold items: never label events, so never in ``image_labels``."""
GOLD_COLUMNS = ["batch", "image", "image_id", "stored_key", "width", "height", "label"]


@dataclass(frozen=True)
class GoldAnswer(LabelEvent):
    """A labeler's answer to a gold item: a label event's fields, stored apart (``GOLD_ANSWERS``)."""

    @property
    def key(self) -> str:
        return f"{GOLD_ANSWERS}/{self.batch}/{self.slot if self.kind == 'label' else self.id}.json"


class GoldLog(EventLog[GoldAnswer]):
    """The append-only answers to gold items (same rules as ``LabelLog``, another prefix)."""

    def __init__(self, store: ObjectStore):
        super().__init__(store, GOLD_ANSWERS, GoldAnswer)


def write_gold(store: ObjectStore, table: pd.DataFrame) -> None:
    """Replace the gold set (one atomic table write)."""
    write_table(store, GOLD_ITEMS, table[GOLD_COLUMNS].reset_index(drop=True))


def read_gold(store: ObjectStore) -> pd.DataFrame:
    """The gold set, empty when none was written."""
    return read_table(store, GOLD_ITEMS) if store.exists(GOLD_ITEMS) else pd.DataFrame(columns=GOLD_COLUMNS)


REVIEW_QUEUE = "review"
"""The ``queue`` of a label event stored by the review of suspect labels: a label like any other
(``image_labels`` reads it, ``new_labels_sensor`` rebuilds its batch), and it overrides the batch's
label file for that image (the reviewer looked at the file's label and decided)."""
LABEL_ISSUES = "label_quality/label_issues.csv"
"""The label_issues asset's table for BI and the review queue."""


def read_label_issues(store: ObjectStore) -> pd.DataFrame | None:
    """The latest label-issue table, or None before label_issues ran."""
    if not store.exists(LABEL_ISSUES):
        return None
    with store.open_read(LABEL_ISSUES) as f:
        return pd.read_csv(f, dtype={"batch": str, "image": str, "image_id": str, "given_label": str,
                                     "suggested_label": str, "source": str, "labeler": str, "stored_key": str},
                           keep_default_na=False)
