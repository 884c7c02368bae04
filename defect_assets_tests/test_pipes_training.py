"""Training through Dagster Pipes: ``scratch_cnn_model`` with ``through_pipes: true`` trains a
tiny CNN in another process (``python -m defect_assets.pipes_training`` under
``dg.PipesSubprocessClient``), whose log lines and per-epoch metrics reach the run, and whose
registered model becomes the asset's value, as in-process training would."""

import os

import dagster as dg
import pytest

from defect_assets.defs.metadata import significant
from defect_assets.defs.models.assets import build_model_asset
from defect_assets.defs.partitions import BATCHES, batch_partitions
from defect_assets.defs.resources import default_resources
from defect_assets.pipeline.family_registry import family
from defect_assets.pipeline.patching import build_augmented_set
from defect_assets.pipeline.tiny import synthetic_patch_set
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.formats import read_value, write_value
from defect_assets.storage.layout import asset_value_prefix
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.waits import SUBPROCESS_SECONDS

pytest_plugins = ["defect_assets_tests.conftest_azurite"]  # the session-scoped `azurite` fixture
EPOCHS = 2
scratch_cnn_model = build_model_asset(family("scratch_cnn"))


def train_through_pipes(store, resources: dict):
    """Store one batch's patch sets as the IO manager does (here they are sources) and materialize
    a tiny ``scratch_cnn_model`` with ``through_pipes``; returns (result, instance)."""
    patch_set = synthetic_patch_set(n_scenes=14, size=32, seed=5)
    write_value(store, asset_value_prefix(["labeled_patches"], "p1"), patch_set)
    write_value(store, asset_value_prefix(["augmented_training_set"], "p1"), build_augmented_set(patch_set))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["p1"])
    config = {"filters": [4, 8], "epochs": EPOCHS, "images_per_epoch": 256, "batch_size": 32,
              "train_angle_step": 90, "through_pipes": True}
    upstream = [dg.AssetSpec(name, partitions_def=batch_partitions) for name in ("labeled_patches",
                                                                                 "augmented_training_set")]
    result = dg.materialize([*upstream, scratch_cnn_model], instance=instance, resources=resources,
                            run_config={"ops": {"scratch_cnn_model": {"config": config}}})
    return result, instance


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_scratch_cnn_trains_in_a_pipes_subprocess_and_reports_epochs_and_version(tmp_path):
    store = LocalObjectStore(tmp_path / "data" / "artifacts")
    result, instance = train_through_pipes(store, default_resources(tmp_path / "data"))
    assert result.success
    (mat,) = result.asset_materializations_for_node("scratch_cnn_model")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    cards = ModelRegistry(store).versions()
    assert [c.version for c in cards] == [meta["version"]]  # the one model the subprocess registered
    card = cards[0]
    assert card.family == "scratch_cnn" and card.data_version.batches == ["p1"]
    assert "through_pipes" not in card.config and card.config["epochs"] == EPOCHS
    assert meta["trained_in_process"] != os.getpid()
    assert meta["epochs"] == meta["epochs_reported"] == EPOCHS  # one custom message per epoch
    assert meta["val_roc_auc"] == significant(card.validation.roc_auc)  # as the UI shows it: 4 significant digits
    value = read_value(store, asset_value_prefix(["scratch_cnn_model"], None))
    assert value["version"].tolist() == [meta["version"]]
    logged = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any(f"scratch_cnn epoch {EPOCHS}/{EPOCHS}" in m for m in logged), logged[-20:]


def test_the_external_entry_point_rebuilds_the_typed_settings_the_asset_sent():
    """What travels through Pipes is the settings model's dump; the entry point validates it back
    into the same model (unknown keys refused), never an untyped object."""
    import pydantic

    from defect_assets.defs.models.families import ScratchCNNConfig, settings_of

    spec = family("scratch_cnn")
    sent = settings_of(spec, ScratchCNNConfig(epochs=3, architecture="lenet", through_pipes=True))
    assert "through_pipes" not in sent.model_dump()
    back = spec.settings.model_validate(sent.model_dump())
    assert type(back) is spec.settings and back == sent and back.architecture == "lenet"
    with pytest.raises(pydantic.ValidationError, match="epoch"):
        spec.settings.model_validate({**sent.model_dump(), "epoch": 3})


class LocalAzureMLJobs:
    """Stands in for ``azure.ai.ml.MLClient`` at the one place this test cannot reach, Azure ML's
    job service: ``create_or_update(command)`` runs the command job's shell command on this machine
    with the job's environment variables, ``jobs.get(name).status`` reports it like Azure ML does.
    Everything else is real: dagster-azure's ``PipesAzureMLClient``, the ``azure.ai.ml`` command
    entity, the Pipes context and messages in Blob Storage (Azurite), the artifact store there."""

    submitted: list = []

    def __init__(self, credential, subscription_id, resource_group_name, workspace_name):
        self.workspace = (subscription_id, resource_group_name, workspace_name)
        self.processes: dict[str, object] = {}
        self.jobs = self

    def create_or_update(self, job):
        import subprocess
        import sys
        from pathlib import Path

        from azure.ai.ml.entities import Command

        assert isinstance(job, Command)
        LocalAzureMLJobs.submitted.append(job)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
        env.update(job.environment_variables)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` = this venv's
        name = f"job-{len(self.processes) + 1}"
        self.processes[name] = subprocess.Popen(job.command, shell=True, env=env)
        return type("Job", (), {"name": name})()

    def get(self, name):
        code = self.processes[name].poll()
        status = "Running" if code is None else ("Completed" if code == 0 else "Failed")
        return type("Job", (), {"status": status})()

    def begin_cancel(self, name):
        self.processes[name].terminate()


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_with_the_azureml_backend_training_runs_as_a_command_job_talking_through_blob_storage(
        tmp_path, azurite, monkeypatch):
    import azure.ai.ml

    from defect_assets.storage.env import store_config
    from defect_assets_tests.azurite import ACCOUNT_KEY

    for name, value in {"DEFECT_ASSETS_STORAGE": "azure", "DEFECT_ASSETS_AZURE_ACCOUNT_URL": azurite.account_url,
                        "AZURE_STORAGE_KEY": ACCOUNT_KEY, "DEFECT_ASSETS_AZURE_ARTIFACT_CONTAINER": "aml-artifacts",
                        "DEFECT_ASSETS_AZURE_LANDING_CONTAINER": "aml-landing",
                        "DEFECT_ASSETS_TRAINING_BACKEND": "azureml", "AZUREML_SUBSCRIPTION_ID": "sub-0",
                        "AZUREML_RESOURCE_GROUP": "rg-defects", "AZUREML_WORKSPACE": "ws-defects",
                        "AZUREML_COMPUTE": "gpu-cluster", "AZUREML_ENVIRONMENT": "defect-assets-train@1",
                        "AZUREML_POLL_SECONDS": "0.5", "DEFECT_ASSETS_PIPES_MESSAGE_INTERVAL": "0.5"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(azure.ai.ml, "MLClient", LocalAzureMLJobs)
    LocalAzureMLJobs.submitted.clear()
    store = store_config("artifacts").open()
    result, instance = train_through_pipes(store, default_resources())
    assert result.success

    (job,) = LocalAzureMLJobs.submitted  # one command job, as Azure ML would have received it
    assert job.command == "python -m defect_assets.pipes_training"
    assert job.compute == "gpu-cluster" and job.environment == "defect-assets-train@1"
    env = job.environment_variables
    assert env["DEFECT_ASSETS_PIPES_TRANSPORT"] == "azure_blob" and env["DEFECT_ASSETS_PIPES_ACCOUNT_URL"]
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(env)
    assert not any(ACCOUNT_KEY in str(v) for v in env.values())  # the job gets no secret from Dagster

    (mat,) = result.asset_materializations_for_node("scratch_cnn_model")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert meta["trained_through"] == "dagster pipes (Azure ML, compute gpu-cluster)"
    assert meta["AzureML Job Name"] == "job-1"
    cards = ModelRegistry(store).versions()  # registered in the Blob artifact store by the job
    assert [c.version for c in cards] == [meta["version"]]
    assert meta["trained_in_process"] != os.getpid()
    assert meta["epochs"] == meta["epochs_reported"] == EPOCHS  # the epoch messages came back through Blob
    logged = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any(f"scratch_cnn epoch {EPOCHS}/{EPOCHS}" in m for m in logged), logged[-20:]
    blobs = azurite.service_client().get_container_client("dagster-pipes")
    assert any(b.name.endswith("/1.json") for b in blobs.list_blobs())  # message chunks went through Blob


def test_the_azureml_backend_says_what_is_missing(tmp_path, monkeypatch):
    from defect_assets.defs.models.pipes import AzureMLSettings, training_backend
    from defect_assets.storage.env import StoreConfig

    monkeypatch.setenv("DEFECT_ASSETS_TRAINING_BACKEND", "azureml")
    monkeypatch.setenv("AZUREML_WORKSPACE", "ws")
    assert training_backend() == "azureml"
    blob = StoreConfig(kind="azure", account_url="https://acct.blob.core.windows.net", container="artifacts")
    with pytest.raises(ValueError, match="AZUREML_SUBSCRIPTION_ID, AZUREML_RESOURCE_GROUP, AZUREML_COMPUTE"):
        AzureMLSettings.from_env(blob)
    for name in ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_COMPUTE", "AZUREML_ENVIRONMENT"):
        monkeypatch.setenv(name, "x")
    with pytest.raises(ValueError, match="cannot open a local folder"):
        AzureMLSettings.from_env(StoreConfig(kind="local", root=str(tmp_path)))
    assert AzureMLSettings.from_env(blob).pipes_account_url == "https://acct.blob.core.windows.net"
    monkeypatch.setenv("DEFECT_ASSETS_TRAINING_BACKEND", "kubernetes")
    with pytest.raises(ValueError, match="use 'subprocess' or 'azureml'"):
        training_backend()


def test_the_pipes_client_resource_follows_the_training_backend(tmp_path, monkeypatch):
    """``pipes_client`` is a resource of the code location: the subprocess client by default, the
    Azure ML one with DEFECT_ASSETS_TRAINING_BACKEND=azureml (built without reaching Azure; a
    missing setting fails the training asset with the reason when it runs)."""
    from defect_assets.defs.models.pipes import AzureMLPipesClient, run_training_through_pipes
    from defect_assets.storage.env import StoreConfig

    monkeypatch.delenv("DEFECT_ASSETS_TRAINING_BACKEND", raising=False)
    assert isinstance(default_resources(tmp_path / "data")["pipes_client"], dg.PipesSubprocessClient)
    monkeypatch.setenv("DEFECT_ASSETS_TRAINING_BACKEND", "azureml")
    for name in ("AZUREML_SUBSCRIPTION_ID", "AZUREML_COMPUTE"):
        monkeypatch.delenv(name, raising=False)
    client = default_resources(tmp_path / "data")["pipes_client"]
    assert isinstance(client, AzureMLPipesClient)
    blob = StoreConfig(kind="azure", account_url="https://acct.blob.core.windows.net", container="artifacts")
    with pytest.raises(dg.Failure, match="needs AZUREML_SUBSCRIPTION_ID"):
        run_training_through_pipes(None, "scratch_cnn", {}, blob, client)
