"""Training as an external process under Dagster Pipes: ``python -m defect_assets.pipes_training``.

A model asset with ``through_pipes: true`` starts this entry point (``dg.PipesSubprocessClient``
on the same machine; ``PipesAzureMLClient`` of dagster-azure runs the same command as an Azure ML
job, see deploy/README.md). It reads what Pipes passes as extras (the family, its settings, the
batches of each input and where the artifact store lives: a ``storage.env.StoreConfig``, no
secret in it), loads the inputs from the artifact store as the IO manager stored them (Parquet,
.npy, JSON), trains with the family's own function (``pipeline.family_registry``: the settings model built
from the dict it receives with ``model_validate``, unknown keys refused), and reports
back: each log line, each epoch's metrics as a custom message, and the registered model as the
asset's materialization (its version is the data version).

How the Pipes context comes in and the messages go out depends on where this runs: a subprocess
reads both from the bootstrap environment (the default); an Azure ML job cannot reach the Dagster
process, so ``DEFECT_ASSETS_PIPES_TRANSPORT=azure_blob`` makes it read its context from, and write
its messages to, Blob Storage (``DEFECT_ASSETS_PIPES_ACCOUNT_URL``; the container and keys come in
the bootstrap parameters), with the credential ``storage.env`` would use (a managed identity there).

Only ``dagster_pipes`` (the protocol, no Dagster instance) is imported here.
"""

from __future__ import annotations

import importlib
import math
import os
import time

from defect_assets.pipeline import family_registry
from defect_assets.pipeline.pipes_transport import PIPES_ACCOUNT_URL_ENV, PIPES_TRANSPORT_ENV
from defect_assets.pipeline.settings import PipelineSettings
from defect_assets.storage.env import StoreConfig, blob_service_client
from defect_assets.storage.formats import read_value
from defect_assets.storage.layout import asset_value_prefix


def pipes_transport(environ=None) -> dict:
    """The ``open_dagster_pipes`` arguments for where this process runs (see the module text)."""
    settings = PipelineSettings.load(environ)
    if settings.pipes_transport != "azure_blob":
        return {}
    account_url = settings.pipes_account_url
    if not account_url:
        raise ValueError(f"{PIPES_TRANSPORT_ENV}=azure_blob needs {PIPES_ACCOUNT_URL_ENV}")
    from dagster_pipes import PipesAzureBlobStorageContextLoader, PipesAzureBlobStorageMessageWriter

    service = blob_service_client(account_url, environ)
    return {"context_loader": PipesAzureBlobStorageContextLoader(service),
            "message_writer": PipesAzureBlobStorageMessageWriter(service, interval=settings.pipes_message_interval)}


class PipesReporter:
    """The training functions' ``log``: lines go to the Dagster run's log, epochs as messages."""

    def __init__(self, pipes):
        self.pipes = pipes
        self.epochs: list[dict] = []

    def __call__(self, message: str) -> None:
        self.pipes.log.info(message)

    def epoch_metrics(self, family: str, epoch: int, row: dict) -> None:
        clean = {k: (float(v) if isinstance(v, int | float) and math.isfinite(v) else None) for k, v in row.items()}
        message = {"kind": "epoch", "family": family, **clean, "epoch": int(epoch)}
        self.epochs.append(message)
        self.pipes.report_custom_message(message)


def load_inputs(store, inputs: dict) -> dict:
    """{asset: [batches] | None} -> {asset: {batch: value} | value}, as the IO manager gives them."""
    out = {}
    for name, batches in inputs.items():
        if batches is None:
            out[name] = read_value(store, asset_value_prefix([name], None))
        else:
            out[name] = {b: read_value(store, asset_value_prefix([name], b)) for b in batches}
    return out


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes(**pipes_transport()) as pipes:
        family = pipes.get_extra("family")
        module = (pipes.extras or {}).get("module")
        if module and family not in {f.name for f in family_registry.families()}:
            importlib.import_module(module)  # a family registered where its training function lives
        spec = family_registry.family(family)  # KeyError naming the known families
        settings = spec.settings.model_validate(pipes.get_extra("config"))
        store = StoreConfig(**pipes.get_extra("store")).open()
        from defect_assets.storage.registry import ModelRegistry

        reporter = PipesReporter(pipes)
        t0 = time.perf_counter()
        inputs = load_inputs(store, pipes.get_extra("inputs"))
        reporter(f"{family}: inputs loaded from {store.url} in {time.perf_counter() - t0:.1f}s (process {os.getpid()})")
        trained = spec.train(settings, inputs, ModelRegistry(store), reporter)
        card = trained.card
        pipes.report_asset_materialization(metadata={
            "version": card.version, "family": card.family,
            "val_roc_auc": float(card.validation.roc_auc), "val_accuracy": float(card.validation.accuracy),
            "training_seconds": round(float(card.training_seconds), 1), "epochs_reported": len(reporter.epochs),
            "data_version": card.data_version.id, "trained_in_process": os.getpid(),
        }, data_version=card.version)


if __name__ == "__main__":
    main()
