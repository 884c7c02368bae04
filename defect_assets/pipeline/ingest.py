"""Ingestion: a landing-zone batch -> content-addressed copies in the artifact store plus an
inventory table. Bad files are rejected with a reason, never fatal for the batch."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pandas as pd

from defect_assets.ml.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageRejected, inspect_image
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.batches import is_label_file, read_manifest
from defect_assets.storage.label_formats import known_label_formats

INVENTORY_COLUMNS = ["path", "role", "sha256", "format", "width", "height", "mode", "bytes", "stored_key", "reason"]
_EXT = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "TIFF": "tif"}


def image_key(sha256: str, fmt: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.{_EXT.get(fmt, 'img')}"


def stored_image_key(store: ObjectStore, sha256: str) -> str | None:
    """Where the content-addressed copy of an image lives (any format), or None."""
    found = [o.key for o in store.list(f"images/{sha256[:2]}/{sha256}.")]
    return found[0] if found else None


def _put_once(store: ObjectStore, key: str, data: bytes) -> None:
    if not store.exists(key):  # content-addressed: same key, same bytes
        store.write_bytes(key, data)


def ingest_batch(landing: ObjectStore, artifacts: ObjectStore, batch_id: str,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One row per manifest file: role 'image', 'label_file' or 'rejected' (with a reason)."""
    manifest = read_manifest(landing, batch_id)
    rows = []
    n = len(manifest.files)
    for i, entry in enumerate(manifest.files):
        path = entry["path"]
        row = dict.fromkeys(INVENTORY_COLUMNS)
        row.update(path=path, role="rejected")
        key = f"{batch_id}/{path}"
        if not landing.exists(key):
            row["reason"] = "listed in the manifest but missing from the landing zone"
            rows.append(row)
            continue
        data = landing.read_bytes(key)
        sha = hashlib.sha256(data).hexdigest()
        row.update(sha256=sha, bytes=len(data))
        if entry.get("sha256") and entry["sha256"] != sha:
            row["reason"] = "content differs from the manifest's sha256 (changed or partly uploaded)"
        elif is_label_file(path, data):
            row.update(role="label_file", stored_key=f"label_files/{sha[:2]}/{sha}")
            _put_once(artifacts, row["stored_key"], data)
        elif not path.lower().endswith(IMAGE_SUFFIXES):
            row["reason"] = (f"not an allowed image type ({', '.join(IMAGE_SUFFIXES)}) nor a label file of a known "
                             f"format ({known_label_formats()})")
        else:
            try:
                info = inspect_image(data, max_pixels)
            except ImageRejected as e:
                row["reason"] = str(e)
            else:
                row.update(role="image", format=info.format, width=info.width, height=info.height,
                           mode=info.mode, stored_key=image_key(sha, info.format))
                _put_once(artifacts, row["stored_key"], data)
        rows.append(row)
        if progress and ((i + 1) % 100 == 0 or i + 1 == n):
            progress(i + 1, n)
    df = pd.DataFrame(rows, columns=INVENTORY_COLUMNS)
    for c in ("width", "height", "bytes"):
        df[c] = df[c].astype("Int64")
    for c in ("path", "role", "sha256", "format", "mode", "stored_key", "reason"):
        df[c] = df[c].astype("string")
    df.attrs["class_folders"] = manifest.class_folders
    return df
