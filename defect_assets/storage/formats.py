"""Tables, arrays and documents in open formats through an ObjectStore (never pickle)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd

from defect_assets.storage.base import ObjectStore


def write_table(store: ObjectStore, key: str, df: pd.DataFrame) -> None:
    """Parquet (typed, compact), written atomically."""
    with store.open_write(key) as f:
        df.to_parquet(f, index=False)


def read_table(store: ObjectStore, key: str) -> pd.DataFrame:
    with store.open_read(key) as f:
        return pd.read_parquet(f)


def write_array(store: ObjectStore, key: str, arr: np.ndarray) -> None:
    """NumPy .npy; object arrays are refused because they would need pickle."""
    if arr.dtype == object:
        raise TypeError(f"refusing to store an object array at {key!r} (it would need pickle)")
    with store.open_write(key) as f:
        np.save(f, arr, allow_pickle=False)


def read_array(store: ObjectStore, key: str, mmap: bool = True) -> np.ndarray:
    """Load a .npy; memory-mapped read-only when the store is a local folder."""
    path = store.local_path(key)
    if mmap and path is not None:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with store.open_read(key) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def write_json(store: ObjectStore, key: str, doc: Any) -> None:
    store.write_bytes(key, json.dumps(doc, indent=2, sort_keys=True, default=str).encode("utf-8"))


def read_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.read_bytes(key).decode("utf-8"))


class ArrayTable:
    """A table plus row-aligned arrays (row i of the table describes arrays[k][i]) and a few
    JSON-able attributes: how patch sets travel between assets and into storage."""

    def __init__(self, table: pd.DataFrame, arrays: dict[str, np.ndarray] | None = None, attrs: dict | None = None):
        self.table = table.reset_index(drop=True)
        self.arrays = dict(arrays or {})
        self.attrs = dict(attrs or {})
        for name, arr in self.arrays.items():
            if len(arr) != len(self.table):
                raise ValueError(f"array {name!r} has {len(arr)} rows, table has {len(self.table)}")

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.arrays.items())
        return f"ArrayTable({len(self)} rows; {shapes})"


def write_versioned(store: ObjectStore, prefix: str, write_files, meta: dict) -> str:
    """Write a group of files as one atomic version: files go under ``prefix/v-<id>/``, then
    ``prefix/current.json`` is switched to them (the only commit point), then older versions
    are removed. A crash at any moment leaves ``current.json`` on a complete version."""
    import uuid

    version = f"v-{dt_stamp()}-{uuid.uuid4().hex[:8]}"
    files = write_files(f"{prefix}/{version}")
    write_json(store, f"{prefix}/current.json", {**meta, "version": version, "files": files})
    for obj in store.list(prefix + "/"):
        rest = obj.key[len(prefix) + 1:]
        if rest.startswith("v-") and not rest.startswith(version + "/"):
            store.delete(obj.key)
    return version


def dt_stamp() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def current_version(store: ObjectStore, prefix: str) -> dict | None:
    key = f"{prefix}/current.json"
    return read_json(store, key) if store.exists(key) else None


def write_array_table(store: ObjectStore, prefix: str, value: ArrayTable) -> str:
    def files(vprefix: str) -> dict:
        out = {"table": f"{vprefix}/table.parquet", "arrays": {}}
        for name, arr in value.arrays.items():
            out["arrays"][name] = f"{vprefix}/{name}.npy"
            write_array(store, out["arrays"][name], arr)
        write_table(store, out["table"], value.table)
        return out

    return write_versioned(store, prefix, files, {"kind": "array_table", "attrs": value.attrs, "rows": len(value)})


def read_array_table(store: ObjectStore, prefix: str) -> ArrayTable:
    meta = current_version(store, prefix)
    if meta is None or meta.get("kind") != "array_table":
        raise FileNotFoundError(f"no array table at {store.url}/{prefix}")
    files = meta["files"]
    return ArrayTable(read_table(store, files["table"]),
                      {k: read_array(store, key) for k, key in files["arrays"].items()}, meta.get("attrs", {}))


def write_value(store: ObjectStore, prefix: str, value) -> str:
    """Store a DataFrame, an ArrayTable or a document (an object with ``to_dict()``, stored as
    JSON) as one atomic version under prefix."""
    if hasattr(value, "to_dict") and not isinstance(value, pd.DataFrame):
        doc = value.to_dict()

        def doc_files(vprefix: str) -> dict:
            write_json(store, f"{vprefix}/document.json", doc)
            return {"document": f"{vprefix}/document.json"}

        return write_versioned(store, prefix, doc_files, {"kind": "document", "type": type(value).__name__})
    if isinstance(value, ArrayTable):
        return write_array_table(store, prefix, value)
    if isinstance(value, pd.DataFrame):
        def files(vprefix: str) -> dict:
            write_table(store, f"{vprefix}/table.parquet", value)
            return {"table": f"{vprefix}/table.parquet"}

        return write_versioned(store, prefix, files, {"kind": "table", "rows": len(value)})
    raise TypeError(f"cannot store a {type(value).__name__}: use a DataFrame, an ArrayTable or a document")


def read_value(store: ObjectStore, prefix: str, as_type: type | None = None):
    """The current version stored under prefix: a DataFrame, an ArrayTable, or a document (a
    dict, or ``as_type.from_dict(doc)`` when a type with that constructor is given)."""
    meta = current_version(store, prefix)
    if meta is None:
        raise FileNotFoundError(f"nothing stored at {store.url}/{prefix}: materialize it first")
    if meta["kind"] == "array_table":
        return read_array_table(store, prefix)
    if meta["kind"] == "document":
        doc = read_json(store, meta["files"]["document"])
        return as_type.from_dict(doc) if as_type is not None and hasattr(as_type, "from_dict") else doc
    return read_table(store, meta["files"]["table"])
