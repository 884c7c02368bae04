"""Choosing the stores from the environment, without Dagster. The variables are the fields of
``storage.settings.StorageSettings`` (listed in docs/settings.md); the Dagster layer wraps what
this module returns as resources (``defs/resources.py``); the scoring service and the CLI open the
stores directly.

Only the *name* of the credential variable is kept in a ``StoreConfig``; its value is read when
the store is opened, so a config can be printed or shown in a UI without a secret in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from defect_assets.storage.base import ObjectStore
from defect_assets.storage.settings import StorageSettings, secret_value

DATA_DIR_ENV = StorageSettings.env("data_dir")
STORAGE_ENV = StorageSettings.env("storage")
AZURE_ACCOUNT_URL_ENV = StorageSettings.env("azure_account_url")
AZURE_CREATE_CONTAINERS_ENV = StorageSettings.env("azure_create_containers")
AZURE_KEY_ENV = StorageSettings.env("azure_storage_key")
AZURE_SAS_TOKEN_ENV = StorageSettings.env("azure_storage_sas_token")

Role = Literal["landing", "artifacts"]
# role -> (container field, prefix field) of StorageSettings
AZURE_ROLE_FIELDS: dict[str, tuple[str, str]] = {
    "landing": ("azure_landing_container", "azure_landing_prefix"),
    "artifacts": ("azure_artifact_container", "azure_artifact_prefix"),
}
LOCAL_FOLDERS = {"landing": "landing", "artifacts": "artifacts"}
# credential kind -> the StorageSettings field holding it
CREDENTIAL_FIELDS = {"key": "azure_storage_key", "sas": "azure_storage_sas_token"}


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    return (StorageSettings.load(environ).data_dir or Path.cwd() / "data").resolve()


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
            value = secret_value(getattr(StorageSettings.load(), CREDENTIAL_FIELDS[self.credential_kind]))
            if not value:
                raise ValueError(f"{self.credential_env} is empty; it was set when the store was configured")
            return value
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()


def azure_credential_env(environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(kind, variable) of the credential whose variable is set: key, else SAS, else default."""
    settings = StorageSettings.load(environ)
    for kind, field in CREDENTIAL_FIELDS.items():
        if getattr(settings, field) is not None:
            return kind, StorageSettings.env(field)
    return "default", None


def blob_service_client(account_url: str, environ: Mapping[str, str] | None = None):
    """A ``BlobServiceClient`` for ``account_url`` with the credential the environment names (shared
    key, else SAS token, else ``DefaultAzureCredential``: a managed identity on Azure)."""
    from azure.storage.blob import BlobServiceClient

    if urlsplit(account_url).query:
        raise ValueError("a Blob account URL must not carry a query string; put a SAS token in "
                         f"{AZURE_SAS_TOKEN_ENV}")
    settings = StorageSettings.load(environ)
    for field in CREDENTIAL_FIELDS.values():
        if getattr(settings, field) is not None:
            return BlobServiceClient(account_url=account_url, credential=secret_value(getattr(settings, field)))
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url=account_url, credential=DefaultAzureCredential())


def storage_kind(environ: Mapping[str, str] | None = None) -> str:
    return StorageSettings.load(environ).storage


def store_config(role: Role, data_dir: Path | None = None, storage: str | None = None,
                 environ: Mapping[str, str] | None = None) -> StoreConfig:
    """The landing zone or the artifact store as the environment configures it. An explicit
    ``data_dir`` means local folders unless ``storage`` says otherwise."""
    if role not in LOCAL_FOLDERS:
        raise ValueError(f"unknown store role {role!r}; use one of {sorted(LOCAL_FOLDERS)}")
    settings = StorageSettings.load(environ)
    if storage is None:
        storage = "local" if data_dir is not None else settings.storage
    storage = storage.strip().lower() or "local"
    if storage == "local":
        root = (data_dir or (settings.data_dir or Path.cwd() / "data").resolve()) / LOCAL_FOLDERS[role]
        return StoreConfig(kind="local", root=str(root))
    if storage != "azure":
        raise ValueError(f"{STORAGE_ENV}={storage!r}: use 'local' or 'azure'")
    account_url = settings.azure_account_url
    if not account_url:
        raise ValueError(f"{STORAGE_ENV}=azure needs {AZURE_ACCOUNT_URL_ENV} (https://<account>.blob.core.windows.net)")
    if urlsplit(account_url).query:  # never echo the URL: the query may be a SAS token
        raise ValueError(f"{AZURE_ACCOUNT_URL_ENV} must not carry a query string; "
                         f"put a SAS token in {AZURE_SAS_TOKEN_ENV}")
    container_field, prefix_field = AZURE_ROLE_FIELDS[role]
    kind, variable = azure_credential_env(environ)
    return StoreConfig(kind="azure", account_url=account_url, container=getattr(settings, container_field),
                       prefix=getattr(settings, prefix_field), create_container=settings.azure_create_containers,
                       credential_env=variable, credential_kind=kind)


def open_store(role: Role, data_dir: Path | None = None) -> ObjectStore:
    """The configured landing zone or artifact store, opened."""
    return store_config(role, data_dir).open()
