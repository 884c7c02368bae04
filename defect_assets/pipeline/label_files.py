"""Label normalization for one batch: every label file of the inventory (and class folders)
-> one table, checked against the batch's images."""

from __future__ import annotations

import hashlib

import pandas as pd

from defect_assets.ml.labels import (
    PAGE_SOURCE,
    LabelFileError,
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
        text = artifacts.read_bytes(r.stored_key).decode("utf-8", errors="replace")
        name, folder = r.path.rsplit("/", 1)[-1].lower(), _folder(r.path)
        try:
            if name == "labels.csv":
                frames.append(parse_labels_csv(text, r.path, folder))
            elif name == "points.csv":
                frames.append(parse_points_csv(text, r.path, folder))
            else:
                frames.append(parse_voc_xml(text, r.path, folder))
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
