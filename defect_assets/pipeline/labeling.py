"""Label normalization for one batch: every label file of the inventory (and class folders)
-> one table, checked against the batch's images."""

from __future__ import annotations

import hashlib

import pandas as pd

from defect_assets.ml import labels as L
from defect_assets.storage.base import ObjectStore


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def normalize_batch_labels(inventory: pd.DataFrame, artifacts: ObjectStore,
                           class_folders: bool | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Returns (labels with an image_id column, notes). Raises LabelFileError on bad rows.

    Class sub-folders count as labels when ``class_folders`` is True, or when it is None and the
    batch has no label file and every image sits in a sub-folder."""
    images = inventory[inventory["role"] == "image"]
    label_files = inventory[inventory["role"] == "label_file"]
    rejected = set(inventory.loc[inventory["role"] == "rejected", "path"])
    frames, problems = [], []
    for r in label_files.itertuples(index=False):
        text = artifacts.read_bytes(r.stored_key).decode("utf-8", errors="replace")
        name, folder = r.path.rsplit("/", 1)[-1].lower(), _folder(r.path)
        try:
            if name == "labels.csv":
                frames.append(L.parse_labels_csv(text, r.path, folder))
            elif name == "points.csv":
                frames.append(L.parse_points_csv(text, r.path, folder))
            else:
                frames.append(L.parse_voc_xml(text, r.path, folder))
        except L.LabelFileError as e:
            problems += e.problems
    if problems:
        raise L.LabelFileError(problems)
    use_folders = class_folders if class_folders is not None else (
        len(label_files) == 0 and len(images) > 0 and all("/" in p for p in images["path"]))
    if use_folders:
        frames.append(L.labels_from_class_folders(list(images["path"])))
    labels = L.combine_labels(frames)
    sizes = {r.path: (int(r.width), int(r.height)) for r in images.itertuples(index=False)}
    labels, notes = L.validate_against_images(labels, sizes, rejected)
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
