"""The labeling page's instructions and practice round (self-contained: no queue, nothing stored).

Instructions: a markdown file the project owner writes, read from the artifact store:
``labeling/instructions/<batch>.md`` for one batch, else ``labeling/instructions.md`` for every
batch. The page renders it itself (headings, paragraphs, lists, bold/italic; no HTML passes).

Practice round: images whose label is already known: the gold set when one exists
(``labeling/gold/items.parquet``, the items ``label_issues`` chose and the queues mix in to measure
labelers), else the image-level rows of the ingested batches' own label files (e.g. ``labels.csv``,
as ``image_labels`` holds them). The page shows them one by
one; the labeler's answer is compared with the known label and the page says whether they agreed.
The known label is sent only with the answer's feedback, never with the item."""

from __future__ import annotations

import hashlib

from defect_assets.serving.annotation import AnnotationDesk
from defect_assets.serving.errors import ApiError
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.batches import BatchError, check_batch_id
from defect_assets.storage.labeling import GOLD_ITEMS, read_gold

INSTRUCTIONS_PREFIX = "labeling/instructions"
MAX_INSTRUCTIONS_BYTES = 64 * 1024
PRACTICE_ITEMS = 10


def instructions(store: ObjectStore, batch: str | None) -> dict:
    """The markdown for ``batch`` (its own file, else the shared one), or empty text when none exists."""
    keys = []
    if batch:
        try:
            check_batch_id(batch)
            keys.append(f"{INSTRUCTIONS_PREFIX}/{batch}.md")
        except BatchError:
            pass
    keys.append(f"{INSTRUCTIONS_PREFIX}.md")
    for key in keys:
        if store.exists(key):
            data = store.read_bytes(key)[:MAX_INSTRUCTIONS_BYTES]
            return {"markdown": data.decode("utf-8", errors="replace"), "source": key}
    return {"markdown": "", "source": None}


PRACTICE_IMAGE_ROUTE = "/v1/labeling/practice/{item}/image"


def _item_id(batch: str, image: str) -> str:
    return hashlib.sha256(f"{batch}\n{image}".encode()).hexdigest()[:20]


class PracticeRound:
    """Practice items drawn from the gold set, else from the known image-level labels of every ingested batch."""

    def __init__(self, desk: AnnotationDesk):
        self.desk = desk

    def _gold(self) -> dict[str, dict]:
        gold = read_gold(self.desk.store)
        classes = sorted(set(map(str, gold["label"])))
        out = {}
        for r in gold.drop_duplicates(["batch", "image"]).sort_values(["batch", "image"]).itertuples(index=False):
            item_id = _item_id(str(r.batch), str(r.image))
            out[item_id] = {"item_id": item_id, "batch": str(r.batch), "image": str(r.image), "width": int(r.width),
                            "height": int(r.height), "classes": classes, "known": str(r.label),
                            "image_url": PRACTICE_IMAGE_ROUTE.format(item=item_id), "stored_key": str(r.stored_key)}
        return out

    def source(self) -> str:
        return "gold" if self.desk.store.exists(GOLD_ITEMS) and self._gold() else "label_files"

    def stored_key(self, item_id: str) -> str:
        """The stored photo of a gold practice item (its image route)."""
        item = self._gold().get(item_id)
        if item is None:
            raise ApiError(404, "unknown_item", f"no gold practice item {item_id[:64]!r}")
        return item["stored_key"]

    def _known(self) -> dict[str, dict]:
        gold = self._gold() if self.desk.store.exists(GOLD_ITEMS) else {}
        if gold:
            return gold
        out = {}
        for batch in self.desk.batches():
            labels = self.desk.file_labels(batch)
            labels = labels[labels["kind"] == "image"]
            if labels.empty:
                continue
            images = {img.image: img for img in self.desk.images(batch)}
            classes = sorted(set(map(str, labels["label"])))
            for r in labels.drop_duplicates("image").sort_values("image").itertuples(index=False):
                img = images.get(str(r.image))
                if img is None:
                    continue
                item_id = _item_id(batch, img.image)
                out[item_id] = {"item_id": item_id, "batch": batch, "image": img.image, "width": img.width,
                                "height": img.height, "classes": classes, "known": str(r.label),
                                "image_url": f"/v1/annotations/batches/{batch}/image?image={img.image}"}
        return out

    def items(self, limit: int = PRACTICE_ITEMS) -> dict:
        known = list(self._known().values())
        # spread over the classes: round-robin by known label, so a round is not all one class
        by_class: dict[str, list[dict]] = {}
        for it in known:
            by_class.setdefault(it["known"], []).append(it)
        picked, queues = [], [by_class[c] for c in sorted(by_class)]
        while len(picked) < limit and any(queues):
            for q in queues:
                if q and len(picked) < limit:
                    picked.append(q.pop(0))
        return {"items": [{k: v for k, v in it.items() if k not in ("known", "stored_key")} for it in picked],
                "available": len(known), "source": self.source()}

    def answer(self, item_id: str, label: str) -> dict:
        item = self._known().get(item_id)
        if item is None:
            raise ApiError(404, "unknown_item", f"no practice item {item_id[:64]!r}")
        if label not in item["classes"]:
            raise ApiError(422, "unknown_class", f"{label[:64]!r} is not one of {item['classes']}")
        return {"item_id": item_id, "label": label, "known": item["known"], "agreed": label == item["known"]}
