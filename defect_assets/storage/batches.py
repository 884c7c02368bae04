"""Batches in the landing zone: a batch is a prefix ``<batch>/`` holding images and optional
label files, plus ``<batch>/_manifest.json`` written LAST. A batch without its manifest is
still uploading and is invisible to the pipeline; the manifest lists every file with its size
and sha256, so a file that is missing or changed after the fact is caught at ingestion."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from defect_assets.storage.base import ObjectStore
from defect_assets.storage.label_formats import label_file_format

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = "defect-assets-batch/1"
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class BatchError(ValueError):
    """A batch that cannot be uploaded or read; the message says why."""


def check_batch_id(batch_id: str) -> str:
    if not BATCH_ID_RE.match(batch_id or ""):
        raise BatchError(f"invalid batch id {batch_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return batch_id


def manifest_key(batch_id: str) -> str:
    return f"{check_batch_id(batch_id)}/{MANIFEST_NAME}"


def is_label_file(path: str, data: bytes | None = None) -> bool:
    """Whether a format of the label-format table (``storage/label_formats.py``) claims the file."""
    return label_file_format(path, data) is not None


@dataclass(frozen=True)
class Manifest:
    batch: str
    files: list[dict]  # {"path", "bytes", "sha256"}
    created: str
    class_folders: bool | None = None
    source: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"format": MANIFEST_FORMAT, "batch": self.batch, "created": self.created,
                           "class_folders": self.class_folders, "source": self.source,
                           "files": self.files}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BatchError(f"{where}: manifest is not valid JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise BatchError(f"{where}: not a {MANIFEST_FORMAT} manifest")
        files = doc.get("files")
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                                  for f in files):
            raise BatchError(f"{where}: manifest 'files' must be a list of {{path, bytes, sha256}}")
        return cls(batch=check_batch_id(doc.get("batch", "")), files=files, created=str(doc.get("created", "")),
                   class_folders=doc.get("class_folders"), source=str(doc.get("source", "")))


def list_batches(store: ObjectStore) -> dict[str, str]:
    """Complete batches (manifest present) -> the manifest's etag."""
    out = {}
    for obj in store.list(""):
        parts = obj.key.split("/")
        if len(parts) == 2 and parts[1] == MANIFEST_NAME and BATCH_ID_RE.match(parts[0]):
            out[parts[0]] = obj.etag
    return out


def read_manifest(store: ObjectStore, batch_id: str) -> Manifest:
    key = manifest_key(batch_id)
    if not store.exists(key):
        raise BatchError(f"batch {batch_id!r} has no manifest in {store.url} (still uploading, or not a batch)")
    return Manifest.from_json(store.read_bytes(key), f"{store.url}/{key}")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def scan_folder(folder: Path) -> tuple[list[Path], list[str]]:
    """The regular files inside ``folder`` (hidden names and a manifest left out) and one line for
    every entry that is anything else (a symlink to a file or a folder, dangling or looping, a
    FIFO, a device, a socket). Only lstat is used: nothing is followed, nothing is opened."""
    files, refused = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            mode = os.lstat(base / d).st_mode
            if stat.S_ISDIR(mode):
                keep.append(d)
            else:  # os.walk lists a symlink to a folder among the folders
                refused.append(f"{(base / d).relative_to(folder).as_posix()}: {_kind(mode)}, not uploaded")
        dirnames[:] = keep
        for f in sorted(filenames):
            if f.startswith(".") or f == MANIFEST_NAME:
                continue
            path = base / f
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                files.append(path)
            else:
                refused.append(f"{path.relative_to(folder).as_posix()}: {_kind(mode)}, not uploaded")
    return files, refused


def read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file, never through a symlink and never blocking on a FIFO put in its
    place after the scan (O_NOFOLLOW | O_NONBLOCK, then fstat on what was actually opened)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise BatchError(f"{path}: cannot be read as a regular file ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BatchError(f"{path}: {_kind(os.fstat(fd).st_mode)}, not uploaded")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def upload_files(store: ObjectStore, batch_id: str, files, class_folders: bool | None = None,
                 overwrite: bool = False, source: str = "", progress=None) -> Manifest:
    """Write (relative path, bytes) pairs into ``<batch>/`` of the landing zone, then the manifest
    (last: only then is the batch visible). The bytes may be a function returning them (read when
    their turn comes). On any failure the files this call wrote are removed again. Re-uploading an existing batch needs
    ``overwrite=True``; it becomes a new version of the batch (a new manifest etag)."""
    check_batch_id(batch_id)
    if store.exists(manifest_key(batch_id)) and not overwrite:
        raise BatchError(f"batch {batch_id!r} already exists in {store.url}; pass overwrite to replace it")
    entries: list[dict] = []
    written: list[str] = []
    try:
        for rel, data in files:
            if rel == MANIFEST_NAME or rel.startswith("/") or ".." in rel.split("/"):
                raise BatchError(f"bad file name in batch {batch_id!r}: {rel!r}")
            if callable(data):  # read lazily, so one file at a time is in memory
                data = data()
            key = f"{batch_id}/{rel}"
            written.append(key)
            store.write_bytes(key, data)
            entries.append({"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            if progress and len(entries) % 200 == 0:
                progress(len(entries))
        if not entries:
            raise BatchError(f"batch {batch_id!r} would hold no files")
        manifest = Manifest(batch=batch_id, files=entries, class_folders=class_folders, source=source,
                            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        store.write_bytes(manifest_key(batch_id), manifest.to_json())
    except BaseException:
        # no partial batch: what this call staged goes (an earlier version's manifest, if any, stays
        # and ingestion catches files that no longer match it)
        for key in written:
            store.delete(key)
        raise
    return manifest


def upload_folder(folder: str | os.PathLike[str], store: ObjectStore, batch_id: str | None = None,
                  class_folders: bool | None = None, overwrite: bool = False, progress=None) -> Manifest:
    """Turn any folder (images, optional label files of the formats in ``storage/label_formats.py``:
    labels.csv, points.csv, VOC XML, ...; or class sub-folders) into a landing-zone batch named
    ``batch_id`` (default: the folder's name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BatchError(f"{folder} is not a folder")
    batch_id = check_batch_id(batch_id or folder.name)
    if store.exists(manifest_key(batch_id)) and not overwrite:  # fail before copying anything
        raise BatchError(f"batch {batch_id!r} already exists in {store.url}; pass overwrite to replace it")
    paths, refused = scan_folder(folder)
    if refused:  # refused before anything is written: only regular files inside the folder are uploaded
        raise BatchError(f"{folder} holds {len(refused)} entr{'y' if len(refused) == 1 else 'ies'} that "
                         "are not regular files (symbolic links are never followed):\n  " + "\n  ".join(refused))
    files = ((p.relative_to(folder).as_posix(), lambda p=p: read_regular_file(p)) for p in paths)
    return upload_files(store, batch_id, files, class_folders, overwrite, str(folder.resolve()), progress)
