"""Storage resources: an abstract store resource and its local-folder implementation (Azure
Blob joins in its own module). Assets ask for ``StorageResource`` and never learn which."""


import os
from pathlib import Path

import dagster as dg

from defect_assets.storage import LocalObjectStore, ObjectStore

DATA_DIR_ENV = "DEFECT_ASSETS_DATA_DIR"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or Path.cwd() / "data").resolve()


class StorageResource(dg.ConfigurableResource):
    """Somewhere bytes live (landing zone or artifact store)."""

    def open(self) -> ObjectStore:
        raise NotImplementedError


class LocalStorage(StorageResource):
    """A local folder."""

    root: str

    def open(self) -> ObjectStore:
        return LocalObjectStore(self.root)


def default_resources(data_dir: Path | None = None) -> dict:
    """The embedded default: landing zone and artifact store as folders under data/."""
    from defect_assets.defs.io_manager import ArtifactIOManager

    data_dir = data_dir or default_data_dir()
    artifacts = LocalStorage(root=str(data_dir / "artifacts"))
    return {
        "landing_zone": LocalStorage(root=str(data_dir / "landing")),
        "artifact_store": artifacts,
        "io_manager": ArtifactIOManager(store=artifacts),
    }
