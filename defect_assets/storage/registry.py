"""The model registry: every trained model is an immutable version under
``models/<family>/<version>/`` holding its artifact files and a ``card.json`` (config, data
version, classes, validation metrics, training time, file hashes; ``ml.records.ModelCard``). The
card is written last, so a version without a card is an interrupted write and is never listed."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from defect_assets.ml.records import ModelCard
from defect_assets.storage.base import ObjectStore

ROOT = "models"


class RegistryError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "registry error"


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]


class ModelRegistry:
    def __init__(self, store: ObjectStore, root: str = ROOT):
        self.store = store
        self.root = root

    def register(self, family: str, files: dict[str, bytes], card: dict | ModelCard) -> ModelCard:
        """Store a new version; returns its card (with 'version', 'family', 'created', 'files'). The
        card is checked before anything is written, and written last (schema version 2)."""
        digest = hashlib.sha256(b"".join(hashlib.sha256(files[k]).digest() for k in sorted(files))).hexdigest()
        version = f"{family}-{_stamp()}-{digest[:8]}"
        prefix = f"{self.root}/{family}/{version}"
        hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        fields = card.to_dict() if isinstance(card, ModelCard) else dict(card)
        full = ModelCard.create({**fields, "version": version, "family": family,
                                 "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "files": hashes})
        for name, data in files.items():
            self.store.write_bytes(f"{prefix}/{name}", data)
        self.store.write_bytes(f"{prefix}/card.json",
                               json.dumps(full.to_dict(), indent=2, sort_keys=True, default=str).encode())
        return full

    @staticmethod
    def family_of(version: str) -> str:
        return version.rsplit("-", 2)[0]

    def card(self, version: str) -> ModelCard:
        key = f"{self.root}/{self.family_of(version)}/{version}/card.json"
        if not self.store.exists(key):
            raise RegistryError(f"no model version {version!r} in {self.store.url}/{self.root}")
        return ModelCard.from_dict(json.loads(self.store.read_bytes(key)))

    def read_file(self, version: str, name: str, verify: bool = True) -> bytes:
        card = self.card(version)
        if name not in card.files:
            raise RegistryError(f"model {version} has no file {name!r} (has {sorted(card.files)})")
        data = self.store.read_bytes(f"{self.root}/{self.family_of(version)}/{version}/{name}")
        if verify and hashlib.sha256(data).hexdigest() != card.files[name]:
            raise RegistryError(f"model {version}: {name} does not match the hash in its card (corrupt copy?)")
        return data

    def versions(self, family: str | None = None) -> list[ModelCard]:
        """Cards of every complete version, oldest first."""
        prefix = f"{self.root}/{family}/" if family else f"{self.root}/"
        cards = [ModelCard.from_dict(json.loads(self.store.read_bytes(o.key))) for o in self.store.list(prefix)
                 if o.key.endswith("/card.json") and o.key.count("/") == 3]
        return sorted(cards, key=lambda c: (c.created or "", c.version))

    def latest(self, family: str) -> ModelCard | None:
        v = self.versions(family)
        return v[-1] if v else None

    # The production pointer: one small JSON, replaced atomically, always naming a complete version.
    @property
    def _production_key(self) -> str:
        return f"{self.root}/production.json"

    def production(self) -> dict | None:
        """{'version', 'promoted', ...} of the model in production, or None."""
        if not self.store.exists(self._production_key):
            return None
        return json.loads(self.store.read_bytes(self._production_key))

    def promote(self, version: str, **extra) -> dict:
        """Point production at a complete version (its card and every file must be readable)."""
        card = self.card(version)
        for name in card.files:
            self.read_file(version, name)  # verifies the hash: never promote a broken copy
        doc = {"version": version, "family": card.family,
               "promoted": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **extra}
        self.store.write_bytes(self._production_key, json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
        return doc
