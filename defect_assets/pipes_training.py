"""Training as an external process under Dagster Pipes: ``python -m defect_assets.pipes_training``.

A model asset with ``through_pipes: true`` starts this entry point (``dg.PipesSubprocessClient``
on the same machine; ``PipesAzureMLClient`` of dagster-azure runs the same command as an Azure ML
job, see deploy/README.md). It reads what Pipes passes as extras (the family, its settings, the
batches of each input and where the artifact store lives: a ``storage.env.StoreConfig``, no
secret in it), loads the inputs from the artifact store as the IO manager stored them (Parquet,
.npy, JSON), trains with the family's own function (``pipeline.families.TRAINERS``), and reports
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

import math
import os
import time

from defect_assets.pipeline.families import TRAINERS, Settings
from defect_assets.pipeline.pipes_transport import (
    PIPES_ACCOUNT_URL_ENV,
    PIPES_MESSAGE_INTERVAL_ENV,
    PIPES_TRANSPORT_ENV,
)
from defect_assets.storage.env import StoreConfig, blob_service_client, env_number
from defect_assets.storage.formats import read_value
from defect_assets.storage.layout import asset_value_prefix


def pipes_transport(environ=None) -> dict:
    """The ``open_dagster_pipes`` arguments for where this process runs (see the module text)."""
    env = os.environ if environ is None else environ
    kind = env.get(PIPES_TRANSPORT_ENV, "").strip().lower()
    if kind in ("", "env", "subprocess"):
        return {}
    if kind != "azure_blob":
        raise ValueError(f"{PIPES_TRANSPORT_ENV}={kind!r}: use 'azure_blob' or leave it unset")
    account_url = env.get(PIPES_ACCOUNT_URL_ENV, "").strip()
    if not account_url:
        raise ValueError(f"{PIPES_TRANSPORT_ENV}=azure_blob needs {PIPES_ACCOUNT_URL_ENV}")
    from dagster_pipes import PipesAzureBlobStorageContextLoader, PipesAzureBlobStorageMessageWriter

    service = blob_service_client(account_url, env)
    interval = env_number(PIPES_MESSAGE_INTERVAL_ENV, 10, minimum=0.2, unit="seconds", environ=env)
    return {"context_loader": PipesAzureBlobStorageContextLoader(service),
            "message_writer": PipesAzureBlobStorageMessageWriter(service, interval=interval)}


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
        if family not in TRAINERS:
            raise ValueError(f"unknown model family {family!r}; known: {', '.join(TRAINERS)}")
        store = StoreConfig(**pipes.get_extra("store")).open()
        from defect_assets.storage.registry import ModelRegistry

        reporter = PipesReporter(pipes)
        t0 = time.perf_counter()
        inputs = load_inputs(store, pipes.get_extra("inputs"))
        reporter(f"{family}: inputs loaded from {store.url} in {time.perf_counter() - t0:.1f}s (process {os.getpid()})")
        trained = TRAINERS[family](Settings(pipes.get_extra("config")), inputs, ModelRegistry(store), reporter)
        card = trained.card
        pipes.report_asset_materialization(metadata={
            "version": card.version, "family": card.family,
            "val_roc_auc": float(card.validation.roc_auc), "val_accuracy": float(card.validation.accuracy),
            "training_seconds": round(float(card.training_seconds), 1), "epochs_reported": len(reporter.epochs),
            "data_version": card.data_version.id, "trained_in_process": os.getpid(),
        }, data_version=card.version)


if __name__ == "__main__":
    main()
