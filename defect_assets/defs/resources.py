"""Storage resources: an abstract store resource with a local-folder and an Azure Blob
implementation. Assets ask for ``StorageResource`` and never learn which; ``default_resources``
picks one from environment variables only:

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

Secrets are read through ``dg.EnvVar`` at run time: the UI and the run config show the
variable's name, never its value, and the resource's repr leaves the credential out.
"""


import os
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pydantic
from dagster_azure.blob import (
    AzureBlobStorageDefaultCredential,
    AzureBlobStorageKeyCredential,
    AzureBlobStorageResource,
    AzureBlobStorageSASTokenCredential,
)

from defect_assets.storage import LocalObjectStore, ObjectStore

DATA_DIR_ENV = "DEFECT_ASSETS_DATA_DIR"
STORAGE_ENV = "DEFECT_ASSETS_STORAGE"
AZURE_ACCOUNT_URL_ENV = "DEFECT_ASSETS_AZURE_ACCOUNT_URL"
AZURE_LANDING_CONTAINER_ENV = "DEFECT_ASSETS_AZURE_LANDING_CONTAINER"
AZURE_ARTIFACT_CONTAINER_ENV = "DEFECT_ASSETS_AZURE_ARTIFACT_CONTAINER"
AZURE_LANDING_PREFIX_ENV = "DEFECT_ASSETS_AZURE_LANDING_PREFIX"
AZURE_ARTIFACT_PREFIX_ENV = "DEFECT_ASSETS_AZURE_ARTIFACT_PREFIX"
AZURE_CREATE_CONTAINERS_ENV = "DEFECT_ASSETS_AZURE_CREATE_CONTAINERS"
AZURE_KEY_ENV = "AZURE_STORAGE_KEY"
AZURE_SAS_TOKEN_ENV = "AZURE_STORAGE_SAS_TOKEN"


def env_number(name: str, default: float, cast=float, minimum: float = 0, unit: str = "") -> float:
    """A numeric setting from the environment, with a clear error naming the variable."""
    raw = os.environ.get(name, str(default))
    try:
        return max(minimum, cast(raw))
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise ValueError(f"{name}={raw!r} is not {kind}{' of ' + unit if unit else ''}") from None


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


def _resolved(value):
    """An EnvVar's value when the resource is used directly, outside a run (the demo's seeding)."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


class AzureBlobStorage(StorageResource, AzureBlobStorageResource):
    """A container of an Azure Blob Storage account, optionally below a key prefix. Configured
    like dagster-azure's AzureBlobStorageResource (account_url + credential: shared key, SAS
    token, DefaultAzureCredential or anonymous); pass secrets as ``dg.EnvVar``."""

    container: str
    prefix: str = ""
    """Keys live under ``<prefix>/`` inside the container (empty: at its root)."""
    create_container: bool = True
    """Create the container on first use when it does not exist."""

    _store: ObjectStore | None = pydantic.PrivateAttr(default=None)

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def __repr_args__(self):
        # the credential holds the resolved secret once Dagster has initialized the resource
        return [(k, v) for k, v in super().__repr_args__() if k != "credential"]

    def _credential(self):
        cred = self.credential
        if cred.credential_type == "key":
            return _resolved(cred.key)
        if cred.credential_type == "sas":
            return _resolved(cred.token)
        if cred.credential_type == "default_azure_credential":
            from azure.identity import DefaultAzureCredential

            return DefaultAzureCredential(**cred.kwargs)
        return None  # anonymous

    def open(self) -> ObjectStore:
        if self._store is None:
            from azure.storage.blob import BlobServiceClient

            from defect_assets.storage.azure import AzureBlobObjectStore

            service = BlobServiceClient(account_url=_resolved(self.account_url), credential=self._credential())
            self._store = AzureBlobObjectStore(service.get_container_client(self.container), self.prefix,
                                               create_container=self.create_container)
        return self._store


def azure_credential_from_env():
    """The credential kind whose variable is set (only its presence is read here; the value is
    read at run time through dg.EnvVar)."""
    if os.environ.get(AZURE_KEY_ENV):
        return AzureBlobStorageKeyCredential(key=dg.EnvVar(AZURE_KEY_ENV))
    if os.environ.get(AZURE_SAS_TOKEN_ENV):
        return AzureBlobStorageSASTokenCredential(token=dg.EnvVar(AZURE_SAS_TOKEN_ENV))
    return AzureBlobStorageDefaultCredential()


def azure_storage_from_env(container_env: str, default_container: str, prefix_env: str) -> AzureBlobStorage:
    account_url = os.environ.get(AZURE_ACCOUNT_URL_ENV, "").strip()
    if not account_url:
        raise ValueError(f"{STORAGE_ENV}=azure needs {AZURE_ACCOUNT_URL_ENV} (https://<account>.blob.core.windows.net)")
    if urlsplit(account_url).query:  # never echo the URL: the query may be a SAS token
        raise ValueError(f"{AZURE_ACCOUNT_URL_ENV} must not carry a query string; "
                         f"put a SAS token in {AZURE_SAS_TOKEN_ENV}")
    return AzureBlobStorage(
        account_url=account_url,
        credential=azure_credential_from_env(),
        container=os.environ.get(container_env) or default_container,
        prefix=os.environ.get(prefix_env, ""),
        create_container=os.environ.get(AZURE_CREATE_CONTAINERS_ENV, "1").strip().lower() not in ("0", "false", "no"),
    )


def default_resources(data_dir: Path | None = None, storage: str | None = None) -> dict:
    """The embedded default: landing zone and artifact store as folders under data/; with
    DEFECT_ASSETS_STORAGE=azure, two Blob containers (see the module docstring). An explicit
    ``data_dir`` means local folders unless ``storage`` says otherwise."""
    from defect_assets.defs.io_manager import ArtifactIOManager

    if storage is None:
        storage = "local" if data_dir is not None else os.environ.get(STORAGE_ENV, "local")
    storage = storage.strip().lower() or "local"
    if storage == "azure":
        landing = azure_storage_from_env(AZURE_LANDING_CONTAINER_ENV, "landing", AZURE_LANDING_PREFIX_ENV)
        artifacts = azure_storage_from_env(AZURE_ARTIFACT_CONTAINER_ENV, "artifacts", AZURE_ARTIFACT_PREFIX_ENV)
    elif storage == "local":
        data_dir = data_dir or default_data_dir()
        landing = LocalStorage(root=str(data_dir / "landing"))
        artifacts = LocalStorage(root=str(data_dir / "artifacts"))
    else:
        raise ValueError(f"{STORAGE_ENV}={storage!r}: use 'local' or 'azure'")
    from defect_assets.defs.deploy.resources import scoring_service_from_env

    return {
        "landing_zone": landing,
        "artifact_store": artifacts,
        "io_manager": ArtifactIOManager(store=artifacts),
        "scoring_service": scoring_service_from_env(),
    }
