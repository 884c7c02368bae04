"""Where a model asset with ``through_pipes: true`` trains: the ``pipes_client`` resource
(``defs/resources.py`` registers ``pipes_client_from_env()``), chosen by the environment like the
stores and the Dask engine are.

- ``DEFECT_ASSETS_TRAINING_BACKEND``: ``subprocess`` (default: ``dg.PipesSubprocessClient`` on this
  machine) or ``azureml``;
- ``AZUREML_SUBSCRIPTION_ID``, ``AZUREML_RESOURCE_GROUP``, ``AZUREML_WORKSPACE``: the workspace;
- ``AZUREML_COMPUTE``: the compute cluster the job runs on (e.g. ``Standard_NC4as_T4_v3`` nodes);
- ``AZUREML_ENVIRONMENT``: an Azure ML environment built from the code-location image
  (e.g. ``defect-assets-train@latest``);
- ``DEFECT_ASSETS_PIPES_ACCOUNT_URL``: the Blob account for the Pipes context and messages
  (default: the artifact store's), ``DEFECT_ASSETS_PIPES_CONTAINER`` its container (``dagster-pipes``);
- ``AZUREML_POLL_SECONDS``, ``DEFECT_ASSETS_PIPES_MESSAGE_INTERVAL``: how often the job's state
  and its messages are read (15 s, 10 s).

On Azure ML the same entry point (``python -m defect_assets.pipes_training``) runs as a command
job through dagster-azure's ``PipesAzureMLClient``; context and messages travel through Blob
Storage, and the job reaches the artifact store with its managed identity (no secret is sent).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from defect_assets.pipeline.pipes_transport import (
    PIPES_ACCOUNT_URL_ENV,
    PIPES_MESSAGE_INTERVAL_ENV,
    PIPES_TRANSPORT_ENV,
)
from defect_assets.pipeline.settings import AZUREML_WORKSPACE_FIELDS, PipelineSettings
from defect_assets.storage.env import StoreConfig, blob_service_client

TRAINING_BACKEND_ENV = PipelineSettings.env("training_backend")
PIPES_CONTAINER_ENV = PipelineSettings.env("pipes_container")
ENTRY_POINT = "python -m defect_assets.pipes_training"
AZUREML_REQUIRED = tuple(PipelineSettings.env(f) for f in AZUREML_WORKSPACE_FIELDS)


def training_backend(environ: Mapping[str, str] | None = None) -> str:
    return PipelineSettings.load(environ).training_backend


@dataclass(frozen=True)
class AzureMLSettings:
    """What the Azure ML backend needs, read from the environment (no secret among it)."""

    subscription_id: str
    resource_group: str
    workspace: str
    compute: str
    environment: str
    pipes_account_url: str
    pipes_container: str = "dagster-pipes"
    poll_seconds: float = 15.0
    message_interval: float = 10.0

    @classmethod
    def from_env(cls, store: StoreConfig, environ: Mapping[str, str] | None = None) -> AzureMLSettings:
        env = PipelineSettings.load(environ)
        missing = [PipelineSettings.env(f) for f in AZUREML_WORKSPACE_FIELDS if not getattr(env, f)]
        if missing:
            raise ValueError(f"{TRAINING_BACKEND_ENV}=azureml needs {', '.join(missing)}")
        if store.kind != "azure":
            raise ValueError(f"{TRAINING_BACKEND_ENV}=azureml needs the artifact store in Blob Storage "
                             "(DEFECT_ASSETS_STORAGE=azure): an Azure ML job cannot open a local folder")
        return cls(subscription_id=env.azureml_subscription_id, resource_group=env.azureml_resource_group,
                   workspace=env.azureml_workspace, compute=env.azureml_compute, environment=env.azureml_environment,
                   pipes_account_url=env.pipes_account_url or store.account_url, pipes_container=env.pipes_container,
                   poll_seconds=env.azureml_poll_seconds, message_interval=env.pipes_message_interval)


def azureml_command(settings: AzureMLSettings, family: str):
    """The Azure ML command job that runs the training entry point (built locally, not submitted).
    Its environment names the Blob transport; Pipes adds its bootstrap variables when it runs."""
    from azure.ai.ml import command

    return command(command=ENTRY_POINT, environment=settings.environment, compute=settings.compute,
                   display_name=f"defect-assets {family} training", experiment_name="defect-assets-training",
                   environment_variables={PIPES_TRANSPORT_ENV: "azure_blob",
                                          PIPES_ACCOUNT_URL_ENV: settings.pipes_account_url,
                                          PIPES_MESSAGE_INTERVAL_ENV: str(settings.message_interval)})


def azureml_client(settings: AzureMLSettings, ml_client=None, blob_service=None):
    """dagster-azure's ``PipesAzureMLClient`` for these settings. ``ml_client`` defaults to an
    ``azure.ai.ml.MLClient`` on ``DefaultAzureCredential``; the Pipes container is created if missing."""
    from dagster_azure.pipes import (
        PipesAzureBlobStorageContextInjector,
        PipesAzureBlobStorageMessageReader,
        PipesAzureMLClient,
    )

    if ml_client is None:
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        ml_client = MLClient(DefaultAzureCredential(), settings.subscription_id, settings.resource_group,
                             settings.workspace)
    blobs = blob_service or blob_service_client(settings.pipes_account_url)
    container = blobs.get_container_client(settings.pipes_container)
    if not container.exists():
        container.create_container()
    return PipesAzureMLClient(
        client=ml_client, poll_interval_seconds=settings.poll_seconds,
        context_injector=PipesAzureBlobStorageContextInjector(container=settings.pipes_container, client=blobs),
        message_reader=PipesAzureBlobStorageMessageReader(container=settings.pipes_container, client=blobs,
                                                          interval=settings.message_interval))


class AzureMLPipesClient(dg.PipesClient):
    """The ``pipes_client`` resource when ``DEFECT_ASSETS_TRAINING_BACKEND=azureml``: dagster-azure's
    ``PipesAzureMLClient``, built by the run that trains (the code location loads without reaching
    Azure: building it opens the workspace and the Pipes container). A missing setting fails that
    asset with the reason."""

    def settings(self, store: StoreConfig) -> AzureMLSettings:
        try:
            return AzureMLSettings.from_env(store)
        except ValueError as e:
            raise dg.Failure(str(e)) from None

    def run(self, *, context: dg.AssetExecutionContext, extras: dict | None = None, command,
            store: StoreConfig) -> dg.PipesClientCompletedInvocation:
        """Submit ``command`` (an ``azure.ai.ml`` command job) and wait for it, as ``PipesAzureMLClient`` does."""
        return azureml_client(self.settings(store)).run(context=context, extras=extras, command=command)


def pipes_client_from_env(environ: Mapping[str, str] | None = None) -> dg.PipesClient:
    """The ``pipes_client`` resource chosen by ``DEFECT_ASSETS_TRAINING_BACKEND``: ``dg.PipesSubprocessClient``
    (training on this machine) or ``AzureMLPipesClient``."""
    return AzureMLPipesClient() if training_backend(environ) == "azureml" else dg.PipesSubprocessClient()


def run_training_through_pipes(context: dg.AssetExecutionContext, family: str, extras: dict, store: StoreConfig,
                               pipes_client: dg.PipesClient) -> tuple[dg.PipesClientCompletedInvocation, str]:
    """Run the training entry point through the asset's ``pipes_client`` resource; returns the
    invocation and how it ran."""
    if isinstance(pipes_client, AzureMLPipesClient):
        settings = pipes_client.settings(store)
        invocation = pipes_client.run(context=context, extras=extras, command=azureml_command(settings, family),
                                      store=store)
        return invocation, f"dagster pipes (Azure ML, compute {settings.compute})"
    invocation = pipes_client.run(context=context, command=[sys.executable, "-m", "defect_assets.pipes_training"],
                                  extras=extras)
    return invocation, "dagster pipes (subprocess)"
