"""Every label source normalized into one table.

Sources (all relative to a batch's root):
- ``labels.csv``: ``image,label`` (image-level; extra columns are ignored),
- class sub-folders (DIGITS style): ``<class>/<image>``,
- ``points.csv``: ``image,x,y[,label]`` defect centers (the dent workflow),
- LabelImg Pascal VOC XML: one ``.xml`` per image with ``<object><name>`` + ``<bndbox>``,
- the labeling page: image-level labels people gave to queued images (``labels_from_page``),
- the annotation view: points and boxes drawn on the photo, or "no defect here" (``labels_from_marks``).

The normalized table (LABEL_COLUMNS) has one row per image-level label, point or box, and one
row of kind ``none`` for an image a person answered "no defect here" (its patches are negative
windows only). ``points_csv_text`` and ``voc_xml_text`` write points and boxes back as the
files they are read from. A bad row
never passes silently: parsing collects every problem and raises LabelFileError naming the file,
the row (1-based line, header = line 1) and the reason.
"""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

LABEL_COLUMNS = ["image", "kind", "label", "x", "y", "xmin", "ymin", "xmax", "ymax", "source", "row", "group"]
"""``group`` (optional, from a ``group`` column of labels.csv or points.csv): a part, a vehicle, a
module; every image of one group goes to the same split."""
DEFAULT_POINT_LABEL = "defect"
NEGATIVE_LABELS = ("ok", "good", "normal", "no_defect", "none", "background", "negative", "pass")
NO_DEFECT_LABEL = "no_defect"
"""The label of a ``none`` row: the image was looked at and holds no defect."""


@dataclass(frozen=True)
class LabelProblem:
    file: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.reason}" if self.row else f"{self.file}: {self.reason}"


class LabelFileError(ValueError):
    """One or more bad label rows; ``problems`` lists every one."""

    def __init__(self, problems: list[LabelProblem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.row))
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} bad label row(s):\n  {shown}{more}")


def empty_labels() -> pd.DataFrame:
    return _frame([])


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    for c in ("x", "y", "xmin", "ymin", "xmax", "ymax"):
        df[c] = df[c].astype("float64")
    df["row"] = df["row"].astype("int64")
    for c in ("image", "kind", "label", "source", "group"):
        df[c] = df[c].astype("string")
    return df


def _row(image, kind, label, source, row, x=math.nan, y=math.nan, box=(math.nan,) * 4, group=None) -> dict:
    xmin, ymin, xmax, ymax = box
    return dict(image=image, kind=kind, label=label, x=x, y=y, xmin=xmin, ymin=ymin,
                xmax=xmax, ymax=ymax, source=source, row=row, group=group or None)


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _read_csv(text: str, source: str, required: list[str], problems: list[LabelProblem]):
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        problems.append(LabelProblem(source, 1, "empty file: expected a header " + ",".join(required)))
        return None, []
    cols = [h.strip().lower() for h in header]
    missing = [c for c in required if c not in cols]
    if missing:
        problems.append(LabelProblem(source, 1, f"header {header!r} lacks column(s) {missing}; "
                                                f"expected {','.join(required)}"))
        return None, []
    rows = []
    for lineno, values in enumerate(reader, start=2):
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(cols):
            problems.append(LabelProblem(source, lineno, f"{len(values)} fields, header has {len(cols)}"))
            continue
        rows.append((lineno, {c: v.strip() for c, v in zip(cols, values)}))
    return cols, rows


def parse_labels_csv(text: str, source: str = "labels.csv", folder: str = "") -> pd.DataFrame:
    """``image,label[,group]`` rows -> image-level labels (other columns are ignored)."""
    problems: list[LabelProblem] = []
    _, rows = _read_csv(text, source, ["image", "label"], problems)
    out, seen = [], {}
    for lineno, r in rows:
        if not r["image"]:
            problems.append(LabelProblem(source, lineno, "empty image name"))
        elif not r["label"]:
            problems.append(LabelProblem(source, lineno, f"empty label for {r['image']!r}"))
        elif r["image"] in seen and seen[r["image"]] != (r["label"], r.get("group") or None):
            (label, group), now = seen[r["image"]], (r["label"], r.get("group") or None)
            what = f"labeled {label!r}" if label != now[0] else f"in group {group!r}"
            here = repr(now[0]) if label != now[0] else f"group {now[1]!r}"
            problems.append(LabelProblem(source, lineno, f"{r['image']!r} {what} earlier and {here} here"))
        elif r["image"] not in seen:
            seen[r["image"]] = (r["label"], r.get("group") or None)
            out.append(_row(_join(folder, r["image"]), "image", r["label"], source, lineno, group=r.get("group")))
    if problems:
        raise LabelFileError(problems)
    return _frame(out)


def _number(value: str, what: str, source: str, lineno: int, problems: list[LabelProblem]) -> float | None:
    try:
        v = float(value)
    except ValueError:
        problems.append(LabelProblem(source, lineno, f"{what} {value!r} is not a number"))
        return None
    if not math.isfinite(v) or v < 0:
        problems.append(LabelProblem(source, lineno, f"{what} {value!r} must be a finite number >= 0"))
        return None
    return v


def parse_points_csv(text: str, source: str = "points.csv", folder: str = "") -> pd.DataFrame:
    """``image,x,y[,label]`` defect centers (pixels, x = column, y = row)."""
    problems: list[LabelProblem] = []
    cols, rows = _read_csv(text, source, ["image", "x", "y"], problems)
    out = []
    for lineno, r in rows:
        if not r["image"]:
            problems.append(LabelProblem(source, lineno, "empty image name"))
            continue
        x = _number(r["x"], "x", source, lineno, problems)
        y = _number(r["y"], "y", source, lineno, problems)
        label = (r.get("label") or DEFAULT_POINT_LABEL) if cols and "label" in cols else DEFAULT_POINT_LABEL
        if x is not None and y is not None:
            out.append(_row(_join(folder, r["image"]), "point", label, source, lineno, x=x, y=y,
                            group=r.get("group")))
    if problems:
        raise LabelFileError(problems)
    return _frame(out)


def parse_voc_xml(text: str, source: str, folder: str = "") -> pd.DataFrame:
    """One LabelImg Pascal VOC annotation -> one row per box (its center as x, y)."""
    problems: list[LabelProblem] = []
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise LabelFileError([LabelProblem(source, e.position[0], f"not well-formed XML: {e}")]) from None
    if root.tag != "annotation":
        raise LabelFileError([LabelProblem(source, 1, f"root element is <{root.tag}>, expected <annotation>")])
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise LabelFileError([LabelProblem(source, 0, "no <filename>")])
    out = []
    for i, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        where = f"<object> #{i}"
        if not name:
            problems.append(LabelProblem(source, i, f"{where}: empty <name>"))
            continue
        if box is None:
            problems.append(LabelProblem(source, i, f"{where} ({name}): no <bndbox>"))
            continue
        vals = [_number((box.findtext(t) or "").strip(), f"{where} <{t}>", source, i, problems)
                for t in ("xmin", "ymin", "xmax", "ymax")]
        if any(v is None for v in vals):
            continue
        xmin, ymin, xmax, ymax = vals
        if not (xmin < xmax and ymin < ymax):
            problems.append(LabelProblem(source, i, f"{where} ({name}): empty box {vals}"))
            continue
        out.append(_row(_join(folder, filename), "box", name, source, i,
                        x=(xmin + xmax) / 2, y=(ymin + ymax) / 2, box=(xmin, ymin, xmax, ymax)))
    if problems:
        raise LabelFileError(problems)
    return _frame(out)


def labels_from_class_folders(image_paths: list[str]) -> pd.DataFrame:
    """``<class>/<image>`` -> image-level label ``<class>`` (the first folder level)."""
    out = [_row(p, "image", p.split("/", 1)[0], "class folders", 0) for p in sorted(image_paths) if "/" in p]
    return _frame(out)


PAGE_SOURCE = "labeling page"


def labels_from_page(page: pd.DataFrame, already_labeled: set[str] = frozenset()) -> tuple[pd.DataFrame, list[str]]:
    """Active labels from the labeling page (``storage.labeling.LabelLog.labels``: image, label,
    labeler, labeled_at, ...) -> image-level label rows, one per image, plus notes. When labelers
    disagree on an image, the latest label counts (and a note names the disagreement); a page
    label for an image that a label file of the batch already labels is ignored with a note (the
    batch's own files win)."""
    notes, out = [], []
    if not len(page):
        return _frame([]), notes
    ordered = page.sort_values(["labeled_at", "event_id"], kind="stable")
    for image, grp in ordered.groupby("image", sort=True):
        image = str(image)
        if image in already_labeled:
            notes.append(f"{PAGE_SOURCE}: {len(grp)} label(s) of {image!r} ignored: a label file of the batch "
                         "labels it")
            continue
        latest = grp.iloc[-1]
        if grp["label"].nunique() > 1:
            said = ", ".join(f"{r.labeler}: {r.label}" for r in grp.itertuples(index=False))
            notes.append(f"{PAGE_SOURCE}: labelers disagree on {image!r} ({said}); the latest, "
                         f"{latest['label']!r} by {latest['labeler']}, counts")
        out.append(_row(image, "image", str(latest["label"]), PAGE_SOURCE, 0))
    return _frame(out), notes


def labels_from_marks(marks: pd.DataFrame, already_labeled: set[str] = frozenset()) -> tuple[pd.DataFrame, list[str]]:
    """The latest annotation of each image (``storage.annotations.MarkLog.marks``: image, kind,
    label, x, y, xmin..ymax) -> point and box rows as ``parse_points_csv`` / ``parse_voc_xml``
    would give them (a box's x, y = its center), and a ``none`` row for "no defect here". An image
    that a label file of the batch labels keeps the file's labels (a note says so)."""
    notes, out = [], []
    for image, grp in marks.groupby("image", sort=True):
        image = str(image)
        if image in already_labeled:
            notes.append(f"{PAGE_SOURCE}: the marks of {image!r} are ignored: a label file of the batch labels it")
            continue
        for r in grp.itertuples(index=False):
            if r.kind == "point":
                out.append(_row(image, "point", str(r.label), PAGE_SOURCE, 0, x=float(r.x), y=float(r.y)))
            elif r.kind == "box":
                box = (float(r.xmin), float(r.ymin), float(r.xmax), float(r.ymax))
                out.append(_row(image, "box", str(r.label), PAGE_SOURCE, 0, x=(box[0] + box[2]) / 2,
                                y=(box[1] + box[3]) / 2, box=box))
            else:
                out.append(_row(image, "none", NO_DEFECT_LABEL, PAGE_SOURCE, 0))
    return _frame(out), notes


def _number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def points_csv_text(labels: pd.DataFrame) -> str:
    """The point rows of a label table as ``points.csv`` (``image,x,y,label``): read back by
    ``parse_points_csv`` they give the same image, label and coordinates."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "x", "y", "label"])
    for r in labels[labels["kind"] == "point"].itertuples(index=False):
        w.writerow([r.image, _number_text(r.x), _number_text(r.y), r.label])
    return buf.getvalue()


def voc_xml_text(image: str, width: int, height: int, depth: int, boxes: pd.DataFrame) -> str:
    """One image's boxes as LabelImg writes a Pascal VOC annotation (integer pixel corners; no
    ``<object>`` for an image verified to hold no defect). ``parse_voc_xml`` reads it back to the
    same rows when the file sits in the image's folder."""
    path = PurePosixPath(image)
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = path.parent.name
    ET.SubElement(root, "filename").text = path.name
    ET.SubElement(root, "path").text = image
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "Unknown"
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", depth)):
        ET.SubElement(size, tag).text = str(int(v))
    ET.SubElement(root, "segmented").text = "0"
    for r in boxes[boxes["kind"] == "box"].itertuples(index=False):
        obj = ET.SubElement(root, "object")
        for tag, v in (("name", r.label), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, tag).text = str(v)
        bnd = ET.SubElement(obj, "bndbox")
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(bnd, tag).text = _number_text(getattr(r, tag))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def combine_labels(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate sources; the same image labeled differently at image level is an error."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_labels()
    df = pd.concat(frames, ignore_index=True)
    problems = []
    img = df[df["kind"] == "image"]
    for image, grp in img.groupby("image"):
        if grp["label"].nunique() > 1:
            first = grp.iloc[0]
            for _, r in grp.iloc[1:].iterrows():
                if r["label"] != first["label"]:
                    problems.append(LabelProblem(str(r["source"]), int(r["row"]),
                                                 f"{image!r} labeled {r['label']!r} here but "
                                                 f"{first['label']!r} in {first['source']}"))
    if problems:
        raise LabelFileError(problems)
    return (df.drop_duplicates(subset=["image", "kind", "label", "x", "y", "xmin", "ymin", "xmax", "ymax"])
            .reset_index(drop=True))


def validate_against_images(labels: pd.DataFrame, sizes: dict[str, tuple[int, int]],
                            rejected: set[str] = frozenset()) -> tuple[pd.DataFrame, list[str]]:
    """Check every label names an image of the batch and lies inside it.

    ``sizes`` maps accepted image path -> (width, height); labels of ``rejected`` images are
    dropped with a note (the image itself was already reported). Returns (kept labels, notes).
    """
    problems, notes, keep = [], [], []
    for i, r in enumerate(labels.itertuples(index=False)):
        if r.image in rejected:
            notes.append(f"{r.source}:{r.row}: label of rejected image {r.image!r} ignored")
            continue
        if r.image not in sizes:
            problems.append(LabelProblem(str(r.source), int(r.row), f"image {r.image!r} is not in this batch"))
            continue
        w, h = sizes[r.image]
        if r.kind in ("point", "box") and not (r.x < w and r.y < h):
            problems.append(LabelProblem(str(r.source), int(r.row),
                                         f"point ({r.x:g}, {r.y:g}) lies outside {r.image!r} ({w}x{h})"))
            continue
        if r.kind == "box" and not (r.xmax <= w and r.ymax <= h):
            problems.append(LabelProblem(str(r.source), int(r.row),
                                         f"box ends at ({r.xmax:g}, {r.ymax:g}) outside {r.image!r} ({w}x{h})"))
            continue
        keep.append(i)
    if problems:
        raise LabelFileError(problems)
    return labels.iloc[keep].reset_index(drop=True), notes


def is_defect_label(label: str, threshold: float = 0.5, negatives: tuple[str, ...] = NEGATIVE_LABELS) -> bool:
    """Binary task: a numeric label (ELPV defect probability) is a defect at >= threshold; a
    class name is a defect unless it is one of the negative names."""
    try:
        return float(label) >= threshold
    except ValueError:
        return label.strip().lower() not in negatives


def class_order(labels) -> list[str]:
    """Classes in a stable order: numerically when every label is a number, else alphabetically."""
    uniq = sorted(set(map(str, labels)))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq
