"""The pipeline's settings: what the Dagster code location, its runs and the Pipes training entry
point read from the environment, beside the storage settings (``storage.settings``, shared with
the scoring service) and the client's (``serving.settings.ClientSettings``: where the deployment
asset finds the service). One field per variable; docs/settings.md is generated from the class.
No Dagster here: ``pipeline/engine.py`` and ``pipes_training.py`` read it too."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from defect_assets.storage.settings import EnvSettings, choice, env, number

AZUREML_WORKSPACE_FIELDS = ("azureml_subscription_id", "azureml_resource_group", "azureml_workspace",
                            "azureml_compute", "azureml_environment")


class PipelineSettings(EnvSettings):
    """Settings of the Dagster code location and its runs."""

    dask_address: str = ""
    """Dask scheduler (`tcp://host:8786`) for per-image work; unset: in this process."""
    landing_sensor_interval_seconds: Annotated[int, number(int, 1, "seconds")] = 30
    """Seconds between two ticks of `landing_zone_sensor` (at least 1)."""
    labels_sensor_interval_seconds: Annotated[int, number(int, 1, "seconds")] = 30
    """Seconds between two ticks of `new_labels_sensor` (at least 1)."""
    retrain_sensor_interval_seconds: Annotated[int, number(int, 1, "seconds")] = 60
    """Seconds between two ticks of `retrain_sensor` (at least 1)."""
    retrain_min_interval_minutes: Annotated[float, number(float, 0, "minutes")] = 60.0
    """`retrain_sensor` asks for at most one run per this many minutes."""
    automation_interval_seconds: Annotated[int, number(int, 1, "seconds")] = 30
    """Seconds between two evaluations of the automation conditions (`after_training_automation`: evaluation,
    champion, deployment and queue after a model trained outside `retrain_job`)."""
    nightly_cron: str = "0 2 * * *"
    """Cron expression of `nightly_retrain_schedule` (off until switched on)."""
    timezone: str = "UTC"
    """Time zone of `nightly_retrain_schedule`'s cron expression."""
    monitoring_cron: str = "15 0 * * *"
    """Cron expression (UTC) of `daily_monitoring_schedule`."""
    training_backend: Annotated[Literal["subprocess", "azureml"], choice("subprocess", "azureml")] = "subprocess"
    """Where a model asset with `through_pipes: true` trains: `subprocess` (this machine) or `azureml` (a command
    job)."""
    azureml_subscription_id: str = Field("", json_schema_extra=env("AZUREML_SUBSCRIPTION_ID"))
    """Azure ML backend: the workspace's subscription."""
    azureml_resource_group: str = Field("", json_schema_extra=env("AZUREML_RESOURCE_GROUP"))
    """Azure ML backend: the workspace's resource group."""
    azureml_workspace: str = Field("", json_schema_extra=env("AZUREML_WORKSPACE"))
    """Azure ML backend: the workspace."""
    azureml_compute: str = Field("", json_schema_extra=env("AZUREML_COMPUTE"))
    """Azure ML backend: the compute cluster the job runs on (e.g. `Standard_NC4as_T4_v3` nodes)."""
    azureml_environment: str = Field("", json_schema_extra=env("AZUREML_ENVIRONMENT"))
    """Azure ML backend: an environment built from the code-location image (e.g. `defect-assets-train@latest`)."""
    azureml_poll_seconds: Annotated[float, number(float, 0.1, "seconds")] = Field(
        15.0, json_schema_extra=env("AZUREML_POLL_SECONDS"))
    """Azure ML backend: seconds between two reads of the job's state (at least 0.1)."""
    pipes_account_url: str = ""
    """Blob account of the Pipes context and messages (unset: the artifact store's)."""
    pipes_container: str = "dagster-pipes"
    """Blob container of the Pipes context and messages."""
    pipes_message_interval: Annotated[float, number(float, 0.2, "seconds")] = 10.0
    """Seconds between two uploads of Pipes message chunks (at least 0.2)."""
    pipes_transport: Annotated[Literal["env", "subprocess", "azure_blob"],
                               choice("env", "subprocess", "azure_blob",
                                      hint="use 'azure_blob' or leave it unset")] = "env"
    """Set by the Azure ML backend for the training entry point: `azure_blob` reads the Pipes context from, and
    writes messages to, Blob Storage; unset: the bootstrap environment of a subprocess."""
