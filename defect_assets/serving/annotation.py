"""The annotation desk behind the annotation view: the images of every ingested batch (the
``raw_images`` inventory in the artifact store), what was drawn on them (``storage.annotations``),
the checks a save must pass, and the exports (points.csv, LabelImg Pascal VOC XML). Every refusal
is an ``ApiError`` with a clear 4xx raised before anything is stored."""

from __future__ import annotations

import io
import math
import threading
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

from defect_assets.ml.labels import (
    NEGATIVE_LABELS,
    PAGE_SOURCE,
    empty_labels,
    labels_from_marks,
    points_csv_text,
    voc_xml_text,
)
from defect_assets.serving.errors import ApiError
from defect_assets.storage.annotations import Annotation, MarkLog
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.batches import BatchError, check_batch_id
from defect_assets.storage.formats import current_version, read_table
from defect_assets.storage.layout import asset_value_prefix

MAX_MARKS = 500
POINT_DECIMALS = 2  # 1/100 px: more than a mouse gives, few enough that the CSV reads well


@dataclass(frozen=True)
class BatchImage:
    batch: str
    image: str
    image_id: str
    width: int
    height: int
    mode: str
    stored_key: str


class AnnotationDesk:
    """One per app; a batch's inventory is re-read only when its ``raw_images`` version changes."""

    def __init__(self, store: ObjectStore, classes: tuple[str, ...]):
        self.store = store
        self.base_classes = tuple(classes)
        self.log = MarkLog(store)
        self._inventories: dict[str, tuple[str, pd.DataFrame]] = {}
        self._lock = threading.Lock()

    # --- the batches and their images ---

    def batches(self) -> list[str]:
        return sorted(b for b in self.store.walk_prefixes("raw_images/") if self._table("raw_images", b) is not None)

    def _table(self, asset: str, batch: str) -> pd.DataFrame | None:
        try:
            check_batch_id(batch)  # a name that could be no batch is no key either
        except BatchError:
            return None
        meta = current_version(self.store, asset_value_prefix(asset, batch))
        if meta is None:
            return None
        stamp = f"{asset}:{meta.get('version', meta['files']['table'])}"
        with self._lock:
            hit = self._inventories.get(f"{asset}/{batch}")
        if hit is None or hit[0] != stamp:
            hit = (stamp, read_table(self.store, meta["files"]["table"]))
            with self._lock:
                self._inventories[f"{asset}/{batch}"] = hit
        return hit[1]

    def images(self, batch: str) -> list[BatchImage]:
        table = self._table("raw_images", batch)
        if table is None:
            raise ApiError(404, "unknown_batch", f"no ingested batch {batch[:64]!r} (raw_images is not built for it)")
        rows = table[table["role"] == "image"].drop_duplicates("path").sort_values("path")
        return [BatchImage(batch, str(r.path), str(r.sha256), int(r.width), int(r.height), str(r.mode),
                           str(r.stored_key)) for r in rows.itertuples(index=False)]

    def image(self, batch: str, image: str) -> BatchImage:
        for img in self.images(batch):
            if img.image == image:
                return img
        raise ApiError(404, "unknown_image", f"batch {batch!r} has no image {image[:200]!r}")

    def file_labels(self, batch: str) -> pd.DataFrame:
        """The batch's labels from its own files (the latest ``image_labels``; empty before it is built)."""
        table = self._table("image_labels", batch)
        if table is None:
            return empty_labels()
        return table[table["source"] != PAGE_SOURCE]

    def classes(self, batch: str) -> list[str]:
        """The classes of the batch's task: the configured mark classes, then the point/box classes the
        batch's files already use; a batch labeled only per image (ELPV's binary ok/defect cells) gets its
        own defect classes instead (no dent or scratch on a solar cell)."""
        files = self.file_labels(batch)
        used = sorted(set(map(str, files.loc[files["kind"].isin(["point", "box"]), "label"])))
        if not used:
            image_classes = sorted(set(map(str, files.loc[files["kind"] == "image", "label"])))
            defects = [c for c in image_classes if c.strip().lower() not in NEGATIVE_LABELS]
            if defects:
                return defects
        return list(dict.fromkeys([*self.base_classes, *used]))

    # --- reading what was drawn ---

    def view(self, batch: str, image: str) -> dict:
        img = self.image(batch, image)
        history = self.log.history(batch, image)
        latest = history[-1] if history else None
        files = self.file_labels(batch)
        mine = files[files["image"] == image]
        return {"batch": batch, "image": image, "image_id": img.image_id, "width": img.width, "height": img.height,
                "classes": self.classes(batch),
                "annotation": latest.to_doc() if latest else None, "versions": len(history),
                "stale": bool(latest and latest.image_id != img.image_id),
                "file_labels": int(len(mine)),
                "file_marks": [{k: _plain(v) for k, v in r.items() if k in ("kind", "label", "x", "y", "xmin", "ymin",
                                                                         "xmax", "ymax")}
                               for r in mine[mine["kind"].isin(["point", "box"])].to_dict("records")]}

    def listing(self, batch: str) -> dict:
        images = self.images(batch)  # first: 404 for a name that is no batch
        latest = self.log.latest(batch)
        labeled_by_files = set(map(str, self.file_labels(batch)["image"]))
        out = []
        for img in images:
            a = latest.get((batch, img.image))
            out.append({"image": img.image, "width": img.width, "height": img.height,
                        "marks": len(a.marks) if a else 0, "no_defect": bool(a and a.no_defect),
                        "annotated": a is not None, "labeler": a.labeler if a else None,
                        # neither annotated here nor labeled by the batch's own files (which win over marks)
                        "needs_marks": a is None and img.image not in labeled_by_files})
        return {"batch": batch, "classes": self.classes(batch), "images": out,
                "annotated": sum(i["annotated"] for i in out), "needs_marks": sum(i["needs_marks"] for i in out)}

    def decisions(self, batch: str) -> pd.DataFrame:
        self.images(batch)
        return self.log.decisions(batch)

    # --- saving ---

    def save(self, labeler: str, batch: str, image: str, marks: list[dict], no_defect: bool,
             suggestions: list[dict], model_version: str) -> tuple[Annotation, bool]:
        img = self.image(batch, image)
        if no_defect and marks:
            raise ApiError(422, "contradiction", "'no defect here' cannot come with marks: delete them or answer "
                                                 "no_defect=false")
        if not no_defect and not marks and not suggestions:
            raise ApiError(422, "empty_annotation", "mark at least one defect, or answer 'no defect here'")
        if len(marks) > MAX_MARKS or len(suggestions) > MAX_MARKS:
            raise ApiError(413, "too_many_marks", f"at most {MAX_MARKS} marks and {MAX_MARKS} suggestions per image")
        classes = self.classes(batch)
        clean = tuple(_checked_mark(i, m, img, classes) for i, m in enumerate(marks))
        decided = tuple(_checked_suggestion(i, s, img) for i, s in enumerate(suggestions))
        if decided and not model_version:
            raise ApiError(422, "invalid_request", "suggestion decisions need the model_version that proposed them")
        history = self.log.history(batch, image)
        latest = history[-1] if history else None
        candidate = Annotation(batch=batch, image=image, image_id=img.image_id, labeler=labeler, marks=clean,
                               no_defect=bool(no_defect), suggestions=decided, model_version=model_version,
                               after=latest.id if latest else "")
        if latest is not None and latest.same_answer(candidate):
            return latest, False  # a retried save: already the latest, one object
        return self.log.append(candidate)

    # --- exports ---

    def batch_labels(self, batch: str) -> pd.DataFrame:
        """The marks of the batch's latest annotations as normalized label rows."""
        current = {(i.image, i.image_id) for i in self.images(batch)}
        marks = self.log.marks(batch)
        # a boolean mask, never a plain list: an empty list would select no *columns* (a batch nobody annotated)
        keep = pd.Series([(str(r.image), str(r.image_id)) in current for r in marks.itertuples(index=False)],
                         index=marks.index, dtype=bool)
        rows, _ = labels_from_marks(marks[keep])
        return rows

    def points_csv(self, batch: str) -> str:
        return points_csv_text(self.batch_labels(batch))

    def voc_xml(self, batch: str, image: str) -> str:
        img = self.image(batch, image)
        rows = self.batch_labels(batch)
        return voc_xml_text(image, img.width, img.height, _depth(img.mode), rows[rows["image"] == image])

    def voc_zip(self, batch: str) -> bytes:
        """One LabelImg XML per image with boxes or answered "no defect here", beside where the
        image sits in the batch (``line/photo.png`` -> ``line/photo.xml``)."""
        rows = self.batch_labels(batch)
        wanted = set(rows.loc[rows["kind"].isin(["box", "none"]), "image"].astype(str))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for img in self.images(batch):
                if img.image in wanted:
                    xml = voc_xml_text(img.image, img.width, img.height, _depth(img.mode),
                                       rows[rows["image"] == img.image])
                    z.writestr(str(PurePosixPath(img.image).with_suffix(".xml")), xml)
        return buf.getvalue()


def _plain(v):
    return None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v)


def _depth(mode: str) -> int:
    return 1 if mode in ("L", "1", "I", "F", "I;16") else 4 if mode in ("RGBA", "CMYK") else 3


def _coordinate(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # "5" and true are not coordinates
        raise ApiError(422, "invalid_mark", f"{what} {str(value)[:40]!r} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise ApiError(422, "invalid_mark", f"{what} must be a finite number")
    return v


def _checked_mark(i: int, m: dict, img: BatchImage, classes: list[str]) -> dict:
    """A mark inside the image with a known class, in the stored form: a point to 1/100 px, a box
    to whole pixels (as LabelImg stores it)."""
    where = f"mark {i}"
    kind, label = m.get("kind"), m.get("label")
    if kind not in ("point", "box"):
        raise ApiError(422, "invalid_mark", f"{where}: kind must be 'point' or 'box', not {str(kind)[:20]!r}")
    if label not in classes:
        raise ApiError(422, "unknown_class", f"{where}: {str(label)[:64]!r} is not a class here; use one of "
                                             f"{', '.join(classes)}")
    if kind == "point":
        x, y = (_coordinate(m.get(k), f"{where} {k}") for k in ("x", "y"))
        x, y = round(x, POINT_DECIMALS), round(y, POINT_DECIMALS)
        if not (0 <= x < img.width and 0 <= y < img.height):
            raise ApiError(422, "outside_image", f"{where}: point ({x:g}, {y:g}) lies outside {img.image!r} "
                                                 f"({img.width}x{img.height})")
        return {"kind": "point", "label": label, "x": x, "y": y}
    xmin, ymin, xmax, ymax = (round(_coordinate(m.get(k), f"{where} {k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
    if not (0 <= xmin < xmax <= img.width and 0 <= ymin < ymax <= img.height):
        raise ApiError(422, "outside_image", f"{where}: box ({xmin}, {ymin})-({xmax}, {ymax}) is empty or leaves "
                                             f"{img.image!r} ({img.width}x{img.height})")
    return {"kind": "box", "label": label, "xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}


def _checked_suggestion(i: int, s: dict, img: BatchImage) -> dict:
    where = f"suggestion {i}"
    if s.get("decision") not in ("accepted", "rejected"):
        raise ApiError(422, "invalid_suggestion", f"{where}: decision must be 'accepted' or 'rejected'")
    x, y = (round(_coordinate(s.get(k), f"{where} {k}"), POINT_DECIMALS) for k in ("x", "y"))
    score = _coordinate(s.get("score"), f"{where} score")
    if not (0 <= x < img.width and 0 <= y < img.height) or not 0 <= score <= 1:
        raise ApiError(422, "outside_image", f"{where}: ({x:g}, {y:g}) score {score:g} is outside the image or [0, 1]")
    return {"x": x, "y": y, "score": round(score, 5), "label": str(s.get("label") or "")[:64],
            "decision": s["decision"]}
