"""An append-only event log in an artifact store, with no lock anywhere: the mechanics that the
label events (``storage.labeling``) and the annotations (``storage.annotations``) share.

Every event is one immutable JSON object ``<prefix>/<batch>/<name>.json``; the event says its own
key (a hash of what it says, or a *slot* that several events race for) and is written with
``ObjectStore.write_new`` (create-if-absent: a complete temporary file hard-linked to the key on a
local disk, a conditional Put Blob on Azure). So the same event stored twice is one object, two
writers at once never overwrite each other, and nothing is ever changed or deleted: undoing or
replacing an event is a new event, and readers merge by listing. Reads are cached per object
(events never change), so a page that asks for the state on every click reads each event once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterable
from typing import Generic, Protocol, Self, TypeVar

from defect_assets.storage.base import ObjectStore


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def content_hash(event, leave_out: Iterable[str] = ("at",), length: int = 32) -> str:
    """A hash of an event dataclass's fields but ``leave_out`` (the stamp ``at`` at least, so a
    retried event is the same event): its id, or a slot when more fields are left out."""
    skip = set(leave_out)
    ident = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in skip}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:length]


class Event(Protocol):
    """What an event log needs of its events (frozen dataclasses with a field ``at``)."""

    at: str

    @property
    def id(self) -> str: ...

    @property
    def key(self) -> str: ...

    def to_json(self) -> bytes: ...

    @classmethod
    def from_json(cls, data: bytes) -> Self: ...


E = TypeVar("E", bound=Event)


class EventLog(Generic[E]):
    """The events of one kind (``event_type``) stored under ``prefix`` in one artifact store."""

    def __init__(self, store: ObjectStore, prefix: str, event_type: type[E]):
        self.store = store
        self.prefix = prefix
        self.event_type = event_type
        self._cache: dict[str, E] = {}
        self._lock = threading.Lock()

    def append(self, event: E) -> tuple[E, bool]:
        """Store an event (stamped with the time unless it has one) unless one exists at its key:
        (the stored event, True if this call stored it). Where keys are slots the stored event may
        be another one that took the slot first: callers compare ``stored.id`` with ``event.id``."""
        stamped = dataclasses.replace(event, at=event.at or utc_now())
        if self.store.write_new(stamped.key, stamped.to_json()):
            with self._lock:
                self._cache[stamped.key] = stamped
            return stamped, True
        return self._read(stamped.key), False

    def _read(self, key: str) -> E:
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = self.event_type.from_json(self.store.read_bytes(key))
            with self._lock:
                self._cache[key] = hit
        return hit

    def keys(self, batch: str | None = None) -> list[str]:
        """The keys of every event (of one batch, or all)."""
        prefix = f"{self.prefix}/{batch}/" if batch else f"{self.prefix}/"
        return [o.key for o in self.store.list(prefix) if o.key.endswith(".json")]

    def events(self, batch: str | None = None) -> list[E]:
        """Every event (of one batch, or all), oldest first."""
        out = [self._read(k) for k in self.keys(batch)]
        return sorted(out, key=lambda e: (e.at, e.id))
