"""Label normalization for one batch: every label file of the inventory (and class folders)
-> one table, checked against the batch's images.

``LABEL_FORMATS`` is the table of label file formats: each entry is how a file is recognised
(``storage/label_formats.py``, where the storage layer's file check reads it), the parser
(text, source path, folder -> rows of ``ml.labels.LABEL_COLUMNS``) and what it yields. A new
format is one ``register_label_format`` call; a label file no format claims is refused with the
names of the formats."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from defect_assets.ml.labels import (
    PAGE_SOURCE,
    LabelFileError,
    LabelProblem,
    combine_labels,
    labels_from_class_folders,
    labels_from_marks,
    labels_from_page,
    parse_labels_csv,
    parse_points_csv,
    parse_voc_xml,
    validate_against_images,
)
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.label_formats import (
    LABEL_FILE_FORMATS,
    LabelFileFormat,
    known_label_formats,
    label_file_format,
    register_label_file_format,
    unregister_label_file_format,
)
from defect_assets.storage.labeling import REVIEW_QUEUE

LabelParser = Callable[[str, str, str], pd.DataFrame]
"""(text, source path in the batch, its folder) -> rows of the normalized label table; raises
``ml.labels.LabelFileError`` naming every bad row."""


@dataclass(frozen=True)
class LabelFormat:
    file: LabelFileFormat
    """How a file of this format is recognised (name, suffix, sniff) and what it yields."""
    parse: LabelParser

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def yields(self) -> str:
        return self.file.yields


LABEL_FORMATS: dict[str, LabelFormat] = {}
"""Name -> format, in the order formats are tried (the order of ``storage.label_formats``)."""


def register_label_format(name: str, parse: LabelParser, yields: str, file_names: tuple[str, ...] = (),
                          suffixes: tuple[str, ...] = (), sniff: Callable[[bytes], bool] | None = None) -> LabelFormat:
    """Add a label file format (tried after those before it): the storage layer's file check and
    the dispatch here then both know it."""
    fmt = LabelFormat(register_label_file_format(LabelFileFormat(name, yields, tuple(n.lower() for n in file_names),
                                                                 tuple(s.lower() for s in suffixes), sniff)), parse)
    LABEL_FORMATS[name] = fmt
    return fmt


def unregister_label_format(name: str) -> None:
    LABEL_FORMATS.pop(name, None)
    unregister_label_file_format(name)


def label_format_of(path: str, data: bytes | None = None) -> LabelFormat:
    """The format that claims a label file; LabelFileError naming the known formats if none does."""
    found = label_file_format(path, data)
    if found is None:
        raise LabelFileError([LabelProblem(path, 0, f"no label format claims this file; known formats: "
                                                    f"{known_label_formats()}")])
    if found.name not in LABEL_FORMATS:
        raise LabelFileError([LabelProblem(path, 0, f"label format {found.name!r} has no parser "
                                                    "(add formats with pipeline.label_files.register_label_format)")])
    return LABEL_FORMATS[found.name]


for _name, _parse in (("labels.csv", parse_labels_csv), ("points.csv", parse_points_csv), ("voc_xml", parse_voc_xml)):
    LABEL_FORMATS[_name] = LabelFormat(LABEL_FILE_FORMATS[_name], _parse)


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _page_labels_of_current_images(page: pd.DataFrame, images: pd.DataFrame,
                                   what: str = "label") -> tuple[pd.DataFrame, list[str]]:
    """Page labels (or marks) whose image is still in the batch with the same content (a
    re-uploaded batch may have dropped or replaced an image since it was labeled); the others are noted."""
    current = set(zip(images["path"].astype(str), images["sha256"].astype(str)))
    keep = [(str(r.image), str(r.image_id)) in current for r in page.itertuples(index=False)]
    gone = page[[not k for k in keep]]
    notes = [f"{PAGE_SOURCE}: {what} {r.label!r} of {r.image!r} by {r.labeler} ignored: that image is no longer "
             "in the batch with the content that was labeled" for r in gone.itertuples(index=False)]
    return page[keep], notes


def normalize_batch_labels(inventory: pd.DataFrame, artifacts: ObjectStore,
                           class_folders: bool | None = None,
                           page_labels: pd.DataFrame | None = None,
                           page_marks: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Returns (labels with an image_id column, notes). Raises LabelFileError on bad rows.

    Class sub-folders count as labels when ``class_folders`` is True, or when it is None and the
    batch has no label file, no marks drawn on the page, and every image sits in a sub-folder.
    ``page_labels`` are the batch's active labels from the labeling page
    (``storage.labeling.LabelLog.labels``); ``page_marks`` the latest annotation of each image
    drawn in the annotation view (``storage.annotations.MarkLog.marks``): points and boxes as if
    they came from points.csv / LabelImg XML, or "no defect here". An image with marks drops its
    image-level page label (the marks say more), with a note."""
    images = inventory[inventory["role"] == "image"]
    label_files = inventory[inventory["role"] == "label_file"]
    rejected = set(inventory.loc[inventory["role"] == "rejected", "path"])
    frames, problems = [], []
    for r in label_files.itertuples(index=False):
        data = artifacts.read_bytes(r.stored_key)
        text = data.decode("utf-8", errors="replace")
        try:
            frames.append(label_format_of(r.path, data).parse(text, r.path, _folder(r.path)))
        except LabelFileError as e:
            problems += e.problems
    if problems:
        raise LabelFileError(problems)
    # photos marked on the page are not class folders: their folder is where they were taken
    use_folders = class_folders if class_folders is not None else (
        len(label_files) == 0 and (page_marks is None or len(page_marks) == 0) and len(images) > 0
        and all("/" in p for p in images["path"]))
    if use_folders:
        frames.append(labels_from_class_folders(list(images["path"])))
    page_notes = []
    # a review of a suspect label (label_issues) replaces the file's image-level label of that image
    reviewed = (set(page_labels.loc[page_labels["queue"].astype(str) == REVIEW_QUEUE, "image"].astype(str))
                if page_labels is not None and len(page_labels) and "queue" in page_labels.columns else set())
    if reviewed:
        frames = [f[~(f["image"].astype(str).isin(reviewed) & (f["kind"] == "image"))] for f in frames]
        page_notes.append(f"{PAGE_SOURCE}: {len(reviewed)} reviewed label(s) replace the label file's")
    from_files = {str(i) for f in frames for i in f["image"]}
    marked: set[str] = set()
    if page_marks is not None and len(page_marks):
        page_marks, page_notes = _page_labels_of_current_images(page_marks, images, "mark")
        marks, more = labels_from_marks(page_marks, from_files)
        page_notes += more
        marked = {str(i) for i in marks["image"]}
        frames.append(marks)
    if page_labels is not None and len(page_labels):
        dropped = page_labels["image"].astype(str).isin(marked)
        page_notes += [f"{PAGE_SOURCE}: label {r.label!r} of {r.image!r} by {r.labeler} gives way to the marks "
                       "drawn on that image" for r in page_labels[dropped].itertuples(index=False)]
        page_labels = page_labels[~dropped]
        page_labels, more = _page_labels_of_current_images(page_labels, images)
        page, even_more = labels_from_page(page_labels, from_files)
        page_notes += more + even_more
        frames.append(page)
    labels = combine_labels(frames)
    sizes = {r.path: (int(r.width), int(r.height)) for r in images.itertuples(index=False)}
    labels, notes = validate_against_images(labels, sizes, rejected)
    notes = page_notes + notes
    sha = dict(zip(images["path"], images["sha256"]))
    labels["image_id"] = labels["image"].map(sha).astype("string")
    return labels, notes


def label_version(labels: pd.DataFrame) -> str:
    """A short content hash of a label table: same labels, same version."""
    cols = ["image_id", "kind", "label", "x", "y", "xmin", "ymin", "xmax", "ymax"]
    if "group" in labels.columns and labels["group"].notna().any():
        cols.append("group")  # batches without groups keep the versions they had before groups existed
    canon = labels[cols].sort_values(cols).to_csv(index=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]
