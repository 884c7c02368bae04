"""Choosing the stores from the environment, without Dagster: the one place that reads the
storage variables. The Dagster layer wraps what it returns as resources (``defs/resources.py``);
the scoring service and the CLI open the stores directly.

| variable | meaning |
|---|---|
| ``DEFECT_ASSETS_STORAGE`` | ``local`` (default: folders under ``DEFECT_ASSETS_DATA_DIR`` or ./data) or ``azure`` |
| ``DEFECT_ASSETS_AZURE_ACCOUNT_URL`` | ``https://<account>.blob.core.windows.net`` (no SAS in it) |
| ``DEFECT_ASSETS_AZURE_LANDING_CONTAINER`` | landing-zone container (default ``landing``) |
| ``DEFECT_ASSETS_AZURE_ARTIFACT_CONTAINER`` | artifact-store container (default ``artifacts``) |
| ``DEFECT_ASSETS_AZURE_LANDING_PREFIX`` / ``..._ARTIFACT_PREFIX`` | optional key prefix inside each container |
| ``DEFECT_ASSETS_AZURE_CREATE_CONTAINERS`` | ``1`` (default) creates missing containers, ``0`` does not |
| ``AZURE_STORAGE_KEY`` | shared account key, or else |
| ``AZURE_STORAGE_SAS_TOKEN`` | a SAS token, or else neither: DefaultAzureCredential (managed identity, az login, ...) |

Only the *name* of the credential variable is kept in a ``StoreConfig``; its value is read when
the store is opened, so a config can be printed or shown in a UI without a secret in it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from defect_assets.storage.base import ObjectStore

DATA_DIR_ENV = "DEFECT_ASSETS_DATA_DIR"
STORAGE_ENV = "DEFECT_ASSETS_STORAGE"
AZURE_ACCOUNT_URL_ENV = "DEFECT_ASSETS_AZURE_ACCOUNT_URL"
AZURE_CREATE_CONTAINERS_ENV = "DEFECT_ASSETS_AZURE_CREATE_CONTAINERS"
AZURE_KEY_ENV = "AZURE_STORAGE_KEY"
AZURE_SAS_TOKEN_ENV = "AZURE_STORAGE_SAS_TOKEN"

Role = Literal["landing", "artifacts"]
# role -> (container variable, default container, prefix variable)
AZURE_ROLE_ENV: dict[str, tuple[str, str, str]] = {
    "landing": ("DEFECT_ASSETS_AZURE_LANDING_CONTAINER", "landing", "DEFECT_ASSETS_AZURE_LANDING_PREFIX"),
    "artifacts": ("DEFECT_ASSETS_AZURE_ARTIFACT_CONTAINER", "artifacts", "DEFECT_ASSETS_AZURE_ARTIFACT_PREFIX"),
}
LOCAL_FOLDERS = {"landing": "landing", "artifacts": "artifacts"}

_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


def env_flag(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (any case); unset or empty: default."""
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a yes/no value (use 1/0, true/false, yes/no, on/off)")


def env_number(name: str, default: float, cast=float, minimum: float = 0, unit: str = "",
               environ: Mapping[str, str] | None = None) -> float:
    """A numeric setting, clamped to ``minimum``, with a clear error naming the variable."""
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip() or str(default)
    try:
        return max(minimum, cast(raw.replace("_", "")))
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise ValueError(f"{name}={raw!r} is not {kind}{' of ' + unit if unit else ''}") from None


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or Path.cwd() / "data").resolve()


@dataclass(frozen=True)
class StoreConfig:
    """Where one store lives: a local folder, or a Blob container (below an optional prefix)."""

    kind: Literal["local", "azure"]
    root: str = ""
    """local: the folder."""
    account_url: str = ""
    container: str = ""
    prefix: str = ""
    create_container: bool = True
    credential_env: str | None = None
    """azure: the variable holding the key or SAS token (None: DefaultAzureCredential)."""
    credential_kind: Literal["key", "sas", "default"] = "default"

    def open(self) -> ObjectStore:
        if self.kind == "local":
            from defect_assets.storage.local import LocalObjectStore

            return LocalObjectStore(self.root)
        from azure.storage.blob import BlobServiceClient

        from defect_assets.storage.azure import AzureBlobObjectStore

        service = BlobServiceClient(account_url=self.account_url, credential=self.credential())
        return AzureBlobObjectStore(service.get_container_client(self.container), self.prefix,
                                    create_container=self.create_container)

    def credential(self):
        """The secret (or credential object), read now from the environment."""
        if self.credential_kind in ("key", "sas"):
            value = os.environ.get(self.credential_env or "", "")
            if not value:
                raise ValueError(f"{self.credential_env} is empty; it was set when the store was configured")
            return value
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()


def azure_credential_env(environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(kind, variable) of the credential whose variable is set: key, else SAS, else default."""
    env = os.environ if environ is None else environ
    if env.get(AZURE_KEY_ENV):
        return "key", AZURE_KEY_ENV
    if env.get(AZURE_SAS_TOKEN_ENV):
        return "sas", AZURE_SAS_TOKEN_ENV
    return "default", None


def blob_service_client(account_url: str, environ: Mapping[str, str] | None = None):
    """A ``BlobServiceClient`` for ``account_url`` with the credential the environment names (shared
    key, else SAS token, else ``DefaultAzureCredential``: a managed identity on Azure)."""
    from azure.storage.blob import BlobServiceClient

    env = os.environ if environ is None else environ
    if urlsplit(account_url).query:
        raise ValueError("a Blob account URL must not carry a query string; put a SAS token in "
                         f"{AZURE_SAS_TOKEN_ENV}")
    kind, variable = azure_credential_env(env)
    if variable:
        return BlobServiceClient(account_url=account_url, credential=env[variable])
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url=account_url, credential=DefaultAzureCredential())


def storage_kind(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    kind = env.get(STORAGE_ENV, "local").strip().lower() or "local"
    if kind not in ("local", "azure"):
        raise ValueError(f"{STORAGE_ENV}={kind!r}: use 'local' or 'azure'")
    return kind


def store_config(role: Role, data_dir: Path | None = None, storage: str | None = None,
                 environ: Mapping[str, str] | None = None) -> StoreConfig:
    """The landing zone or the artifact store as the environment configures it. An explicit
    ``data_dir`` means local folders unless ``storage`` says otherwise."""
    env = os.environ if environ is None else environ
    if role not in LOCAL_FOLDERS:
        raise ValueError(f"unknown store role {role!r}; use one of {sorted(LOCAL_FOLDERS)}")
    if storage is None:
        storage = "local" if data_dir is not None else storage_kind(env)
    storage = storage.strip().lower() or "local"
    if storage == "local":
        root = (data_dir or default_data_dir()) / LOCAL_FOLDERS[role]
        return StoreConfig(kind="local", root=str(root))
    if storage != "azure":
        raise ValueError(f"{STORAGE_ENV}={storage!r}: use 'local' or 'azure'")
    account_url = env.get(AZURE_ACCOUNT_URL_ENV, "").strip()
    if not account_url:
        raise ValueError(f"{STORAGE_ENV}=azure needs {AZURE_ACCOUNT_URL_ENV} (https://<account>.blob.core.windows.net)")
    if urlsplit(account_url).query:  # never echo the URL: the query may be a SAS token
        raise ValueError(f"{AZURE_ACCOUNT_URL_ENV} must not carry a query string; "
                         f"put a SAS token in {AZURE_SAS_TOKEN_ENV}")
    container_env, default_container, prefix_env = AZURE_ROLE_ENV[role]
    kind, variable = azure_credential_env(env)
    return StoreConfig(kind="azure", account_url=account_url, container=env.get(container_env) or default_container,
                       prefix=env.get(prefix_env, ""),
                       create_container=env_flag(AZURE_CREATE_CONTAINERS_ENV, True, env),
                       credential_env=variable, credential_kind=kind)


def open_store(role: Role, data_dir: Path | None = None) -> ObjectStore:
    """The configured landing zone or artifact store, opened."""
    return store_config(role, data_dir).open()
