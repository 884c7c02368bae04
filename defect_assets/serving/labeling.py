"""The labeling desk behind the labeling page: the current queue (``storage.labeling``) merged
with the label events, per labeler. What is next, how far the queue is, and what a label, a
skip or an undo stores. Every refusal is an ``ApiError`` with a clear 4xx; nothing is ever
overwritten (events are immutable objects, see ``storage.labeling``)."""

from __future__ import annotations

import dataclasses
import threading

from defect_assets.serving.errors import ApiError
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.labeling import (
    REVIEW_QUEUE,
    GoldAnswer,
    GoldLog,
    LabelEvent,
    LabelingQueue,
    LabelLog,
    active_events,
    current_queue_id,
    read_label_issues,
    read_queue,
)

IMAGE_ROUTE = "/v1/labeling/items/{item}/image"
HEATMAP_ROUTE = "/v1/labeling/items/{item}/heatmap"


class LabelingDesk:
    """One per app. The queue is re-read only when ``current_queue.json`` names another one."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.log = LabelLog(store)
        self.gold_log = GoldLog(store)
        self._queue: LabelingQueue | None = None
        self._lock = threading.Lock()

    def queue(self) -> LabelingQueue:
        queue_id = current_queue_id(self.store)
        if queue_id is None:
            raise ApiError(404, "no_queue", "no labeling queue yet: materialize labeling_queue (retrain_job builds "
                                            "it after each deployment)")
        with self._lock:
            if self._queue is None or self._queue.id != queue_id:
                self._queue = read_queue(self.store, queue_id)
            return self._queue

    # --- reading ---

    def view(self, labeler: str, queue: LabelingQueue | None = None) -> dict:
        """The queue as this labeler sees it: progress, every item's status, and the next item."""
        queue = queue or self.queue()
        events = self.log.events()
        active = active_events(events)
        labeled = {(e.batch, e.image): e for e in active if e.kind == "label"}
        mine = {e.item: e for e in active if e.labeler == labeler and e.queue == queue.id}
        answered = {e.item: e for e in active_events(self.gold_log.events())
                    if e.kind == "label" and e.labeler == labeler and e.queue == queue.id}
        items, nxt = [], None
        for row in queue.items.sort_values("rank").to_dict("records"):
            key = (row["batch"], row["image"])
            if row.get("gold_label"):  # a gold item: done once this labeler answered it (never a label)
                status = "labeled" if row["item_id"] in answered else (
                    "skipped" if row["item_id"] in mine and mine[row["item_id"]].kind == "skip" else "todo")
                item = self.describe(queue, row, status, answered.get(row["item_id"]))
            elif key in labeled:
                status = "labeled"
                item = self.describe(queue, row, status, labeled.get(key))
            else:
                status = "skipped" if row["item_id"] in mine and mine[row["item_id"]].kind == "skip" else "todo"
                item = self.describe(queue, row, status, labeled.get(key))
            items.append(item)
            if nxt is None and status == "todo":
                nxt = item
        count = {s: sum(i["status"] == s for i in items) for s in ("labeled", "skipped", "todo")}
        last = self._last_undoable(events, labeler, queue)
        return {"queue": queue.id, "created": queue.doc.get("created"), "strategy": queue.doc.get("strategy"),
                "diversity": bool(queue.doc.get("diversity")), "model_version": queue.model_version,
                "classes": queue.classes, "labeler": labeler,
                "progress": {"items": len(items), "labeled": count["labeled"], "skipped": count["skipped"],
                             "remaining": count["todo"], "done": len(items) - count["todo"]},
                "can_undo": last is not None, "next": nxt, "items": items}

    @staticmethod
    def describe(queue: LabelingQueue, row: dict, status: str, label: LabelEvent | None = None) -> dict:
        item = row["item_id"]
        return {"item_id": item, "rank": int(row["rank"]), "batch": row["batch"], "image": row["image"],
                "width": int(row["width"]), "height": int(row["height"]), "status": status,
                "label": label.label if label else None, "labeled_by": label.labeler if label else None,
                "guess": row["guess"], "guess_probability": float(row["guess_probability"]),
                "probabilities": dict(zip(queue.classes, map(float, row["probabilities"]))),
                "strategy": row["strategy"], "score": float(row["score"]), "model_version": row["model_version"],
                "image_url": IMAGE_ROUTE.format(item=item),
                "heatmap_url": HEATMAP_ROUTE.format(item=item) if queue.doc.get("heatmaps") else None}

    def item(self, item_id: str, queue: LabelingQueue | None = None) -> tuple[LabelingQueue, dict]:
        queue = queue or self.queue()
        row = queue.item(item_id)
        if row is None:
            raise ApiError(404, "not_in_queue", f"item {item_id[:64]!r} is not in the current labeling queue "
                                                f"{queue.id} (a finished or replaced queue?)")
        return queue, row

    # --- writing ---

    def label(self, labeler: str, item_id: str, label: str) -> tuple[LabelEvent, bool]:
        queue, row = self.item(item_id)
        if label not in queue.classes:
            raise ApiError(422, "unknown_class", f"{label[:64]!r} is not a class of this queue; use one of "
                                                 f"{', '.join(queue.classes)}")
        if row.get("gold_label"):
            return self._answer_gold(labeler, queue, row, label)
        events = self.log.events(row["batch"])
        for e in active_events(events):
            if e.kind == "label" and e.labeler == labeler and e.item == item_id and e.queue == queue.id \
                    and e.label != label:
                raise ApiError(409, "already_labeled", f"you labeled {row['image']!r} {e.label!r}; undo it first")
        # the check above is for a clear message; the rule is held by the write: a concurrent post of
        # another label took the same slot key first and this one loses
        event = self._event("label", queue, row, labeler, events, label=label)
        stored, created = self.log.append(event)
        if stored.id != event.id:
            raise ApiError(409, "already_labeled", f"you labeled {row['image']!r} {stored.label!r}; undo it first")
        return stored, created

    def _answer_gold(self, labeler: str, queue: LabelingQueue, row: dict, label: str) -> tuple[LabelEvent, bool]:
        """A gold item's answer goes to the gold log (``storage.labeling.GOLD_ANSWERS``), never to
        the label events: it is no new label, ``image_labels`` never sees it."""
        events = self.gold_log.events(row["batch"])
        answer = GoldAnswer(**dataclasses.asdict(self._event("label", queue, row, labeler, events, label=label)))
        stored, created = self.gold_log.append(answer)
        if stored.id != answer.id:
            raise ApiError(409, "already_labeled", f"you answered {row['image']!r} {stored.label!r} already")
        return stored, created

    def labeler_quality(self) -> list[dict]:
        """Per labeler: agreement with the gold items they answered, and Cohen's kappa against each
        other labeler on the images both labeled (``ml.label_quality.labeler_report``)."""
        from defect_assets.ml.label_quality import labeler_report

        gold: dict[str, str] = {}
        events, queues = [], {}
        for e in active_events(self.gold_log.events()):
            if e.kind != "label":
                continue
            if e.queue not in queues:
                queues[e.queue] = read_queue(self.store, e.queue)
            row = queues[e.queue].item(e.item)
            if row and row.get("gold_label"):
                gold[f"gold:{e.batch}/{e.image}"] = str(row["gold_label"])
                events.append({"labeler": e.labeler, "key": f"gold:{e.batch}/{e.image}", "label": e.label})
        events += [{"labeler": e.labeler, "key": f"{e.batch}/{e.image}", "label": e.label}
                   for e in active_events(self.log.events()) if e.kind == "label"]
        return labeler_report(events, gold)

    # --- the review of suspect labels (label_issues) ---

    @staticmethod
    def review_id(batch: str, image: str) -> str:
        import hashlib

        return hashlib.sha256(f"review\n{batch}\n{image}".encode()).hexdigest()[:16]

    def review_items(self, suggest: bool = False) -> dict:
        """The suspects of the latest label_issues table, worst first, that nobody reviewed yet (a
        confirmed or changed label is never asked again), each with its given label and, when
        ``suggest``, the out-of-fold model's."""
        issues = read_label_issues(self.store)
        if issues is None:
            raise ApiError(404, "no_label_issues", "no label-issue table yet: materialize label_issues")
        decided = {(e.batch, e.image) for e in active_events(self.log.events())
                   if e.kind == "label" and e.queue == REVIEW_QUEUE}
        suspects = issues[issues["is_issue"].astype(str).str.lower() == "true"]
        classes = sorted(set(issues["given_label"]) | set(issues["suggested_label"]))
        items = []
        for r in suspects.sort_values("rank", kind="stable").to_dict("records"):
            if (r["batch"], r["image"]) in decided:
                continue
            rid = self.review_id(r["batch"], r["image"])
            item = {"item_id": rid, "rank": int(r["rank"]), "batch": r["batch"], "image": r["image"],
                    "given_label": r["given_label"], "source": r["source"], "labeler": r["labeler"],
                    "image_url": f"/v1/labeling/review/{rid}/image"}
            if suggest:
                item.update(suggested_label=r["suggested_label"], self_confidence=float(r["self_confidence"]))
            items.append(item)
        return {"classes": classes, "reviewed": len(decided), "items": items}

    def review_item(self, item_id: str) -> dict:
        issues = read_label_issues(self.store)
        if issues is not None:
            for r in issues.to_dict("records"):
                if self.review_id(r["batch"], r["image"]) == item_id:
                    return r
        raise ApiError(404, "not_in_review", f"item {item_id[:64]!r} is not a suspect of the latest label_issues")

    def review(self, labeler: str, item_id: str, label: str) -> tuple[LabelEvent, bool]:
        """Confirm (the given label) or change a suspect's label: stored as a label event of the
        review queue, so the batch's labels change as with any page label."""
        row = self.review_item(item_id)
        table = read_label_issues(self.store)
        classes = sorted(set(table["given_label"]) | set(table["suggested_label"]))
        if label not in classes:
            raise ApiError(422, "unknown_class", f"{label[:64]!r} is not a label of these images; use one of "
                                                 f"{', '.join(classes)}")
        events = self.log.events(row["batch"])
        undos = [e for e in events if e.kind == "undo" and e.labeler == labeler and e.item == item_id]
        event = LabelEvent(kind="label", queue=REVIEW_QUEUE, item=item_id, batch=row["batch"], image=row["image"],
                           image_id=row["image_id"], labeler=labeler, model_version="label_issues", label=label,
                           after=undos[-1].id if undos else "")
        stored, created = self.log.append(event)
        if stored.id != event.id:
            raise ApiError(409, "already_labeled", f"you reviewed {row['image']!r} as {stored.label!r} already")
        return stored, created

    def skip(self, labeler: str, item_id: str) -> tuple[LabelEvent, bool]:
        queue, row = self.item(item_id)
        return self.log.append(self._event("skip", queue, row, labeler, self.log.events(row["batch"])))

    def undo(self, labeler: str) -> tuple[LabelEvent, dict]:
        """Retract this labeler's latest label or skip in the current queue; returns the undo
        event and the item it gave back."""
        queue = self.queue()
        last = self._last_undoable(self.log.events(), labeler, queue)
        if last is None:
            raise ApiError(409, "nothing_to_undo", f"{labeler} has no label or skip left to undo in queue {queue.id}")
        _, row = self.item(last.item, queue)
        undo = LabelEvent(kind="undo", queue=queue.id, item=last.item, batch=last.batch, image=last.image,
                          image_id=last.image_id, labeler=labeler, model_version=last.model_version, target=last.id)
        stored, _ = self.log.append(undo)
        return stored, row

    @staticmethod
    def _last_undoable(events: list[LabelEvent], labeler: str, queue: LabelingQueue) -> LabelEvent | None:
        mine = [e for e in active_events(events) if e.labeler == labeler and e.queue == queue.id]
        return mine[-1] if mine else None

    @staticmethod
    def _event(kind: str, queue: LabelingQueue, row: dict, labeler: str, events: list[LabelEvent],
               label: str = "") -> LabelEvent:
        # `after` = this labeler's latest undo on the item: the same submission repeated is the same
        # event (stored once), while labeling again after an undo is a new one.
        undos = [e for e in events if e.kind == "undo" and e.labeler == labeler and e.item == row["item_id"]
                 and e.queue == queue.id]
        return LabelEvent(kind=kind, queue=queue.id, item=row["item_id"], batch=row["batch"], image=row["image"],
                          image_id=row["image_id"], labeler=labeler, model_version=row["model_version"], label=label,
                          after=undos[-1].id if undos else "")
