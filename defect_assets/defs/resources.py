"""Storage resources: the stores that ``storage.env`` chooses from the environment, wrapped for
Dagster. Assets ask for ``StorageResource`` and never learn which kind it is. The variables are
the fields of ``defect_assets.storage.settings.StorageSettings``; secrets reach Dagster only as ``dg.EnvVar``, so the
UI and run config show a variable's name, never its value, and a resource's repr leaves the
credential out.
"""

from pathlib import Path

import dagster as dg
import pydantic
from dagster_azure.blob import (
    AzureBlobStorageDefaultCredential,
    AzureBlobStorageKeyCredential,
    AzureBlobStorageResource,
    AzureBlobStorageSASTokenCredential,
)

from defect_assets.storage import LocalObjectStore, ObjectStore
from defect_assets.storage.env import AZURE_KEY_ENV, AZURE_SAS_TOKEN_ENV, StoreConfig, store_config


class StorageResource(dg.ConfigurableResource):
    """Somewhere bytes live (landing zone or artifact store)."""

    def open(self) -> ObjectStore:
        raise NotImplementedError

    def store_config(self) -> StoreConfig | None:
        """Where the store lives, for another process to open it (a Dask worker); None if unknown."""
        return None


class LocalStorage(StorageResource):
    """A local folder."""

    root: str

    def open(self) -> ObjectStore:
        return LocalObjectStore(self.root)

    def store_config(self) -> StoreConfig:
        return StoreConfig(kind="local", root=str(Path(self.root).resolve()))


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

    def store_config(self) -> StoreConfig | None:
        """Workers read a key or SAS token from the same variable as ``storage.env`` does (never
        from this resource: the config a worker receives carries no secret)."""
        kind = {"key": "key", "sas": "sas", "default_azure_credential": "default"}.get(self.credential.credential_type)
        if kind is None:
            return None
        variable = {"key": AZURE_KEY_ENV, "sas": AZURE_SAS_TOKEN_ENV}.get(kind)
        return StoreConfig(kind="azure", account_url=str(_resolved(self.account_url)), container=self.container,
                           prefix=self.prefix, create_container=self.create_container, credential_env=variable,
                           credential_kind=kind)

    def open(self) -> ObjectStore:
        if self._store is None:
            from azure.storage.blob import BlobServiceClient

            from defect_assets.storage.azure import AzureBlobObjectStore

            service = BlobServiceClient(account_url=_resolved(self.account_url), credential=self._credential())
            self._store = AzureBlobObjectStore(service.get_container_client(self.container), self.prefix,
                                               create_container=self.create_container)
        return self._store


def storage_resource(config: StoreConfig) -> StorageResource:
    """The resource for a store chosen by ``storage.env``; a secret travels as ``dg.EnvVar``."""
    if config.kind == "local":
        return LocalStorage(root=config.root)
    credential = {
        "key": lambda: AzureBlobStorageKeyCredential(key=dg.EnvVar(config.credential_env)),
        "sas": lambda: AzureBlobStorageSASTokenCredential(token=dg.EnvVar(config.credential_env)),
        "default": AzureBlobStorageDefaultCredential,
    }[config.credential_kind]()
    return AzureBlobStorage(account_url=config.account_url, credential=credential, container=config.container,
                            prefix=config.prefix, create_container=config.create_container)


def default_resources(data_dir: Path | None = None, storage: str | None = None) -> dict:
    """The embedded default: landing zone and artifact store as folders under data/; with
    DEFECT_ASSETS_STORAGE=azure, two Blob containers. An explicit ``data_dir`` means local
    folders unless ``storage`` says otherwise. Also the IO manager, the scoring service and the
    Pipes client that ``through_pipes`` training runs on."""
    from defect_assets.defs.deploy.resources import scoring_service_from_env
    from defect_assets.defs.io_manager import ArtifactIOManager
    from defect_assets.defs.models.pipes import pipes_client_from_env

    landing = storage_resource(store_config("landing", data_dir, storage))
    artifacts = storage_resource(store_config("artifacts", data_dir, storage))
    return {
        "landing_zone": landing,
        "artifact_store": artifacts,
        "io_manager": ArtifactIOManager(store=artifacts),
        "scoring_service": scoring_service_from_env(),
        # where a model with through_pipes trains: dg.PipesSubprocessClient, or Azure ML
        # (DEFECT_ASSETS_TRAINING_BACKEND=azureml; defs/models/pipes.py)
        "pipes_client": pipes_client_from_env(),
    }
