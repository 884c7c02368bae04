"""The one storage interface: a flat key -> bytes store with prefixes, sizes and etags.

The landing zone, the artifact store and (later) the model registry are all ObjectStores, so
the rest of the code never knows whether it talks to a local folder or to Azure Blob Storage.
Keys are '/'-separated relative paths; every write is atomic (readers see the old object or the
complete new one, never a partial file).
"""

from __future__ import annotations

import abc
import contextlib
import io
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO


class StoreKeyError(KeyError):
    """A key that does not exist (or is not a valid key)."""

    def __str__(self) -> str:  # KeyError quotes its argument; a plain message reads better
        return str(self.args[0]) if self.args else "missing key"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


def normalize_key(key: str) -> str:
    """Validate a key: relative, '/'-separated, no '..' or empty parts."""
    if not key or key.startswith("/") or "\\" in key:
        raise StoreKeyError(f"invalid key {key!r}: keys are relative '/'-separated paths")
    norm = posixpath.normpath(key)
    if norm.startswith("..") or norm == "." or any(p in ("", "..") for p in norm.split("/")):
        raise StoreKeyError(f"invalid key {key!r}")
    return norm


class ObjectStore(abc.ABC):
    """Abstract key -> bytes store. Implementations: LocalObjectStore (and Azure Blob)."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where this store lives, for people (a folder path or a container URL); no secrets."""

    @abc.abstractmethod
    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A writable binary file; the object appears atomically when the block exits
        without an exception, and not at all otherwise."""

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; StoreKeyError if missing."""

    @abc.abstractmethod
    def info(self, key: str) -> ObjectInfo | None:
        """Size and etag of one object, or None if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with prefix, sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (no error if it is already gone)."""

    # Conveniences built on the primitives above.
    def exists(self, key: str) -> bool:
        return self.info(key) is not None

    def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        with self.open_write(key) as f:
            f.write(data)
        info = self.info(key)
        assert info is not None, f"object {key!r} vanished right after it was written"
        return info

    def write_new(self, key: str, data: bytes) -> bool:
        """Write ``data`` only if no object has this key yet: True when this call created it,
        False when one already existed (left untouched). Stores override it with a primitive that
        makes check and write one step (a hard link; a conditional Put Blob); this fallback is
        only as safe as exists-then-write."""
        if self.exists(key):
            return False
        self.write_bytes(key, data)
        return True

    def open_read(self, key: str) -> BinaryIO:
        return io.BytesIO(self.read_bytes(key))

    def local_path(self, key: str) -> str | None:
        """A local file path for the object when the store is a local folder (lets NumPy
        memory-map large arrays); None for remote stores."""
        return None

    def walk_prefixes(self, prefix: str = "") -> Iterator[str]:
        """The distinct first path components below prefix ('folders')."""
        seen: set[str] = set()
        plen = len(prefix)
        for obj in self.list(prefix):
            head = obj.key[plen:].split("/", 1)[0]
            if head and head not in seen:
                seen.add(head)
                yield head
