"""Where bytes live: one object-store interface, a local-folder implementation, and the
formats (Parquet, .npy, JSON, PNG) used to put tables and arrays into it. No pickle anywhere."""

from defect_assets.storage.base import ObjectInfo, ObjectStore, StoreKeyError
from defect_assets.storage.local import LocalObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "StoreKeyError", "LocalObjectStore"]
