"""Sign-in sessions of the labeling page, kept server-side in the artifact store, so every replica
of the service (one store, local or Azure Blob) sees the same sessions and a logout anywhere
ends the session everywhere.

A session id is 32 random bytes (``secrets.token_urlsafe``), opaque: it says nothing about the
labeler or their token. Only its SHA-256 names the object (``sessions/<sha256>.json``), so a
listing of the store reveals no cookie. The object holds the labeler's name, when it was made
and when it expires; a session is valid until that time or until it is revoked (the object is
deleted at logout; an expired one is deleted when it is next presented). Nothing here knows
about HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets

from defect_assets.storage.base import ObjectStore, StoreKeyError

PREFIX = "sessions"
ID_BYTES = 32


def _key(session_id: str) -> str:
    return f"{PREFIX}/{hashlib.sha256(session_id.encode()).hexdigest()}.json"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SessionStore:
    def __init__(self, store: ObjectStore):
        self.store = store

    def create(self, labeler: str, seconds: float) -> str:
        """A new session for ``labeler`` that expires after ``seconds``: its id (the cookie's value)."""
        while True:
            session_id = secrets.token_urlsafe(ID_BYTES)
            now = _now()
            doc = {"labeler": labeler, "created": now.isoformat(timespec="seconds"),
                   "expires": (now + dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")}
            if self.store.write_new(_key(session_id), json.dumps(doc).encode()):
                return session_id

    def labeler(self, session_id: str | None) -> str | None:
        """The labeler of a live session, or None (unknown, revoked, expired or malformed id)."""
        if not session_id or len(session_id) > 128:
            return None
        key = _key(session_id)
        try:
            doc = json.loads(self.store.read_bytes(key))
            expires = dt.datetime.fromisoformat(doc["expires"])
            name = doc["labeler"]
        except (StoreKeyError, ValueError, KeyError, TypeError):
            return None
        if expires <= _now():
            self.store.delete(key)  # expired: gone for good
            return None
        return name if isinstance(name, str) else None

    def revoke(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= 128:
            self.store.delete(_key(session_id))
