"""The training function of each model family, without Dagster. Each one takes its settings
(the family's pydantic model from ``pipeline/family_settings.py``), the upstream values it
trains on (asset name -> {batch: value}), a registry and a logger; it trains (with the small
hyperparameter search), registers the best model with its card, and returns a ``TrainedModel``.
``pipeline/family_registry.py`` registers the families; adding one is a function (here or in
any module) plus one ``register_family`` call."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defect_assets.ml.records import ModelCard
from defect_assets.pipeline.family_settings import (
    ElasticNetConfig,
    EnsembleConfig,
    KerasTrainConfig,
    ScratchCNNConfig,
    VGG16Config,
)
from defect_assets.pipeline.search import grid, run_trials
from defect_assets.pipeline.training import (
    SplitData,
    all_labels,
    augmented_data,
    check_trainable,
    data_version,
    epoch_logger,
    golden_record,
    input_spec,
    split_data,
    task_classes,
    task_targets,
    train_keras_family,
)
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

Inputs = dict[str, dict[str, ArrayTable]]
Log = Callable[[str], None]


@dataclass
class TrainedModel:
    card: ModelCard
    trials: pd.DataFrame
    history: pd.DataFrame | None = None
    """Per-epoch curves (Keras families)."""
    notes: dict | None = None
    """Family-specific figures for the UI (e.g. how many features the elastic net kept)."""


def feature_spec(attrs: dict) -> dict:
    """The backbone spec of a backbone_features value (values written before the EfficientNet
    backbone name VGG16 blocks and weights only)."""
    if "spec" in attrs:
        return dict(attrs["spec"])
    return {"backbone": "vgg16", "blocks": list(attrs["blocks"]), "weights": attrs.get("weights", "offline")}


def _view_stack(f: ArrayTable, mask: np.ndarray, views: int) -> np.ndarray:
    """(views, n, D): the stored features of the first ``views`` views of the masked patches."""
    if views == 1:
        return np.asarray(f.arrays["features"])[mask][None]
    stored = f.arrays.get("view_features")
    if stored is None or len(stored) < views:
        have = 1 if stored is None else len(stored)
        raise ValueError(f"the elastic net asks for {views} views but backbone_features holds {have}; "
                         f"materialize backbone_features with views={views}")
    return np.asarray(stored)[:views, mask]


def train_elastic_net(config: ElasticNetConfig, inputs: Inputs, registry: ModelRegistry, log: Log) -> TrainedModel:
    """Elastic-net logistic regression (L1 + L2) on the pretrained features of every batch; C
    (and l1_ratio) picked on the validation split. With stored views, the quarter turns and
    mirrors of the training patches are extra rows (``train_views``) and the validation score
    averages ``test_time_views`` of them, as the scorer will. Stored as plain arrays (no pickle)."""
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.metrics import summary_metrics

    feats = inputs["backbone_features"]
    classes = task_classes(sorted({str(v) for f in feats.values() for v in f.table["label"]}), config.task)
    train_views, test_views = int(config.train_views), int(config.test_time_views)
    parts = {s: [(_view_stack(f, (f.table["split"] == s).to_numpy(), train_views if s == "train" else test_views),
                  f.table[f.table["split"] == s]) for _, f in sorted(feats.items())] for s in ("train", "validation")}
    stacks = {s: np.concatenate([a for a, _ in parts[s]], axis=1) for s in parts}  # (views, n, D)
    tables = {s: pd.concat([t for _, t in parts[s]], ignore_index=True) for s in parts}
    ys = {s: task_targets(tables[s], config.task, classes) for s in parts}
    if config.shuffle_labels:
        log("elastic_net: training on PERMUTED labels (shuffle_labels=True, a sanity check)")
        ys["train"] = np.random.default_rng(config.seed).permutation(ys["train"])
    x_val = stacks["validation"]
    check_trainable(SplitData(stacks["train"][0], ys["train"], None),
                    SplitData(x_val[0], ys["validation"], None), classes)
    base = {"C": config.C, "l1_ratio": config.l1_ratio}
    t0 = time.perf_counter()

    # every view of a training patch is a row of its own, with the patch's label
    fit_x = stacks["train"].reshape(-1, stacks["train"].shape[-1])
    fit_y, weights = np.tile(ys["train"], train_views), None
    if config.soft_labels and config.task == "binary" and not config.shuffle_labels:
        from defect_assets.ml.linear import soft_binary_rows

        p = pd.to_numeric(tables["train"]["label"], errors="coerce").to_numpy()  # ELPV: 0, 1/3, 2/3, 1
        p = np.where(np.isfinite(p), p, tables["train"]["is_defect"].to_numpy().astype(float))  # class names
        fit_x, fit_y, weights = soft_binary_rows(fit_x, np.tile(p, train_views))
        log(f"elastic_net: soft targets, {len(fit_y)} weighted rows from {len(p)} patches")
    log(f"elastic_net: {len(fit_y):,} training rows ({train_views} view(s) of {len(ys['train'])} patches), "
        f"{fit_x.shape[1]} features; validation averages {test_views} view(s)")

    def val_proba(m):
        return np.mean([m.predict_proba(v) for v in x_val], axis=0)

    def train(s):
        m = fit_elastic_net(fit_x, fit_y, classes, C=s["C"], l1_ratio=s["l1_ratio"],
                            class_weight="balanced" if config.class_weight_balanced else None, seed=config.seed,
                            sample_weight=weights)
        return m, summary_metrics(ys["validation"], val_proba(m))

    model, best, trials = run_trials(grid(base, {"C": config.search_C, "l1_ratio": config.search_l1_ratio}), train,
                                     log=log)
    seconds = time.perf_counter() - t0
    proba = val_proba(model)
    metrics = summary_metrics(ys["validation"], proba)
    any_f = next(iter(feats.values()))
    card = registry.register("elastic_net", {"linear.npz": model.to_bytes()}, {
        "kind": "features+linear", "task": config.task, "classes": classes,
        "config": {**config.model_dump(), **best}, "data_version": data_version(feats),
        "features": feature_spec(any_f.attrs), "inference": {"views": test_views},
        "input": {"size": any_f.attrs["size"], "channels": any_f.attrs["channels"]},
        "validation": metrics, "training_seconds": seconds, "trials": trials.to_dict("records"),
        "golden": golden_record(SplitData(x_val[0], ys["validation"], tables["validation"]), proba),
        "nonzero_features": model.nonzero_features})
    log(f"elastic_net_model {card.version}: validation AUC {metrics['roc_auc']:.3f}, "
        f"{model.nonzero_features}/{fit_x.shape[1]} features used")
    return TrainedModel(card, trials, notes={"nonzero_features": model.nonzero_features})


def _keras_family(family: str, config: KerasTrainConfig, inputs: Inputs, registry: ModelRegistry, log: Log,
                  build_for: Callable, phases_for: Callable) -> TrainedModel:
    """The shared part of the Keras families: data, label-shuffle sanity switch, search, register.
    build_for(settings, train, k) -> model; phases_for(settings, train, val, k) -> [(name, fit)]."""
    augmented, patches = inputs["augmented_training_set"], inputs["labeled_patches"]
    classes = task_classes(all_labels(patches), config.task)
    train = augmented_data(augmented, config.task, classes, config.train_angle_step)
    val = split_data(patches, "validation", config.task, classes)
    patch_size = int(train.x.shape[1])
    if config.input_size and config.input_size < patch_size:
        from defect_assets.ml.preprocess import shrink_patches

        log(f"{family}: shrinking {patch_size} px patches to its {config.input_size} px input")
        train.x, val.x = shrink_patches(train.x, config.input_size), shrink_patches(val.x, config.input_size)
    if config.shuffle_labels:
        log(f"{family}: training on PERMUTED labels (shuffle_labels=True, a sanity check)")
        train.y = np.random.default_rng(config.seed).permutation(train.y)
    check_trainable(train, val, classes)
    log(f"{family}: {len(train.y):,} augmented training images, {len(val.y)} validation patches, classes {classes}")
    base = {"learning_rate": config.learning_rate, "dropout": config.dropout, "batch_size": config.batch_size}
    settings = grid(base, {"learning_rate": config.search_learning_rate, "dropout": config.search_dropout,
                           "batch_size": config.search_batch_size})

    def one(s):
        settings_used = {**config.model_dump(), **s}
        warm = (warm_start_version(registry, family, settings_used, classes, train)
                if config.warm_start and not config.shuffle_labels else None)  # a sanity check starts afresh
        if warm:
            log(f"{family}: warm start from {warm} (same architecture, input and classes)")

        def build():
            from defect_assets.ml.scorer import load_keras_registered

            return load_keras_registered(registry, warm) if warm else build_for(s, train, len(classes))

        card, hist = train_keras_family(
            family, build, phases_for(s, train, val, len(classes)),
            train, val, classes, config.task, settings_used, data_version(patches), registry, log,
            patch_size=patch_size, views=config.test_time_views, warm_start_from=warm)
        return (card, hist), card.validation.to_dict()

    (card, hist), _, trials = run_trials(settings, one, log=log)
    return TrainedModel(card, trials, history=hist)


WARM_START_KEYS = ("task", "architecture", "filters", "cut_block", "weights", "dropout", "input_size")
"""Settings that shape the network: a previous model is a sound starting point only when they match."""


def warm_start_version(registry: ModelRegistry, family: str, settings: dict, classes: list[str],
                       train: SplitData) -> str | None:
    """The latest registered model of ``family`` to continue from, when it has the same
    architecture settings, classes and input as this training (a retrain after new images or
    labels); None otherwise (the first training, or a changed recipe: start from scratch)."""
    card = registry.latest(family)
    if not card or card.kind != "keras" or card.classes != classes:
        return None
    before = card.config
    if any(before.get(k) != settings.get(k) for k in WARM_START_KEYS):
        return None
    if card.input.size != int(train.x.shape[1]) or card.input.channels != input_spec(train.x)["channels"]:
        return None
    return str(card.version)


def _fit_settings(config: KerasTrainConfig, s: dict, epochs: int, lr: float, budget_share: float = 1.0):
    from defect_assets.ml.training import FitSettings

    return FitSettings(epochs=epochs, batch_size=int(s["batch_size"]), learning_rate=lr,
                       images_per_epoch=config.images_per_epoch or None, patience=config.patience,
                       class_weight=config.class_weight_balanced, seed=config.seed,
                       time_budget_s=float(config.time_budget_seconds) * budget_share or None)


def _input_shape(train: SplitData) -> tuple[int, int, int]:
    return train.x.shape[1:3] + ((train.x.shape[3],) if train.x.ndim == 4 else (1,))


def train_scratch_cnn(config: ScratchCNNConfig, inputs: Inputs, registry: ModelRegistry, log: Log) -> TrainedModel:
    """A CNN trained from scratch on the augmented training set of every batch, validated on
    the untouched validation split, with early stopping and learning-rate reduction."""
    from defect_assets.ml.cnn import bn_momentum_for, make_scratch_cnn
    from defect_assets.ml.training import fit, seed_everything

    def build(s, train, k):
        seed_everything(config.seed)
        steps = config.epochs * (config.images_per_epoch or len(train.y)) // int(s["batch_size"])
        return make_scratch_cnn(_input_shape(train), k, config.architecture, tuple(config.filters),
                                float(s["dropout"]), bn_momentum_for(steps))

    def phases(s, train, val, k):
        fs = _fit_settings(config, s, config.epochs, float(s["learning_rate"]))
        on_epoch = epoch_logger("scratch_cnn", config.epochs, log)
        return [("train", lambda m: fit(m, train.x, train.y, val.x, val.y, fs, k, on_epoch))]

    return _keras_family("scratch_cnn", config, inputs, registry, log, build, phases)


def train_fine_tuned_vgg16(config: VGG16Config, inputs: Inputs, registry: ModelRegistry, log: Log) -> TrainedModel:
    """Pretrained VGG16 cut at a block, with a new head: first the head alone, then the top
    kept block fine-tuned at a lower learning rate."""
    from defect_assets.ml.cnn import make_vgg16_transfer, set_trainable_blocks
    from defect_assets.ml.training import fit, seed_everything

    def build(s, train, k):
        seed_everything(config.seed)
        return make_vgg16_transfer(_input_shape(train), k, config.cut_block, float(s["dropout"]), config.weights)

    def phases(s, train, val, k):
        total = config.epochs + config.fine_tune_epochs  # the time budget is shared by epochs planned
        head = _fit_settings(config, s, config.epochs, float(s["learning_rate"]), config.epochs / total)
        tune = _fit_settings(config, s, config.fine_tune_epochs, config.fine_tune_learning_rate,
                             config.fine_tune_epochs / total)
        head_log = epoch_logger("fine_tuned_vgg16", total, log)
        tune_log = epoch_logger("fine_tuned_vgg16", total, log, offset=config.epochs)

        def head_phase(m):
            set_trainable_blocks(m, None)
            return fit(m, train.x, train.y, val.x, val.y, head, k, head_log)

        def tune_phase(m):
            n = set_trainable_blocks(m, config.cut_block)
            log(f"fine_tuned_vgg16: fine-tuning block {config.cut_block} ({n} conv layers) "
                f"at lr {config.fine_tune_learning_rate:g}")
            return fit(m, train.x, train.y, val.x, val.y, tune, k, tune_log)

        return [("head", head_phase), ("fine_tune", tune_phase)] if config.fine_tune_epochs > 0 \
            else [("head", head_phase)]

    return _keras_family("fine_tuned_vgg16", config, inputs, registry, log, build, phases)


def train_ensemble(config: EnsembleConfig, inputs: Inputs, registry: ModelRegistry, log: Log) -> TrainedModel:
    """The average of the latest model of every other family, weighted by a small grid of
    weights chosen on the validation split (never the test split): a candidate of its own, which
    the champion picks only when it is better on validation. Members must share an input size."""
    from defect_assets.ml.metrics import summary_metrics
    from defect_assets.ml.scorer import EnsembleScorer, load_registered, shared_predictions, weighted_average

    patches = inputs["labeled_patches"]
    members = [str(df["version"].iloc[0]) for name, df in sorted(inputs.items()) if name != "labeled_patches"]
    scorers = [load_registered(registry, v) for v in members]

    def shape(s) -> tuple:
        return s.patch_size, s.channels, tuple(s.classes), s.card.task

    # the anomaly family scores defect vs good only: it joins when the supervised members do the same
    supervised = [s for s in scorers if s.card.kind != "anomaly"] or scorers
    sizes = {shape(s) for s in supervised}
    if len(sizes) != 1:
        raise ValueError(f"ensemble members disagree on patch size, channels, classes or task: {sorted(sizes)}")
    apart = [m for m, s in zip(members, scorers) if shape(s) != shape(supervised[0])]
    if apart:
        log(f"ensemble: left out {', '.join(apart)} (another task, classes or input than the supervised members)")
        keep = [shape(s) == shape(supervised[0]) for s in scorers]
        members, scorers = [m for m, k in zip(members, keep) if k], [s for s, k in zip(scorers, keep) if k]
    first = scorers[0].card
    patch_input = {"size": scorers[0].patch_size, "channels": scorers[0].channels}  # members shrink their own
    val = split_data(patches, "validation", first.task, first.classes)
    t0 = time.perf_counter()
    probas = np.stack(shared_predictions(scorers, val.x))  # (members, N, K)
    # weights on a simplex grid (steps of 1/steps), equal weights first: ties keep equal weights
    grid_w = [np.full(len(members), 1 / len(members))]
    steps = int(config.weight_steps)
    if steps > 0 and len(members) <= 4:
        import itertools

        for combo in itertools.product(range(steps + 1), repeat=len(members)):
            if sum(combo) == steps:
                grid_w.append(np.asarray(combo, np.float64) / steps)
    trials = []
    for w in grid_w:
        m = summary_metrics(val.y, weighted_average(w, probas))
        trials.append({"weights": [round(float(x), 4) for x in w], **{f"val_{k}": v for k, v in m.items()}})
    table = pd.DataFrame(trials)
    score = table[f"val_{config.metric}"].to_numpy()
    tied = np.flatnonzero(score >= score.max() - float(config.tie_tolerance))
    best = int(tied[table["val_log_loss"].to_numpy()[tied].argmin()])
    keep = grid_w[best] > 0
    table["chosen"] = np.arange(len(table)) == best
    dropped = [m for m, k in zip(members, keep) if not k]
    members, scorers = [m for m, k in zip(members, keep) if k], [s for s, k in zip(scorers, keep) if k]
    weights = grid_w[best][keep]
    card_stub = {"kind": "ensemble", "task": first.task, "classes": first.classes, "input": patch_input,
                 "members": members, "weights": weights.tolist(), "version": "ensemble (unregistered)"}
    ensemble = EnsembleScorer(ModelCard.create(card_stub), scorers, weights)
    proba = ensemble.predict_proba(val.x)
    metrics = summary_metrics(val.y, proba)
    seconds = time.perf_counter() - t0
    log(f"ensemble of {', '.join(members)} (weights {weights.round(3).tolist()}"
        + (f"; weight 0, left out: {', '.join(dropped)}" if dropped else "") + "): validation "
        + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    card = registry.register("ensemble", {"members.json": json.dumps({"members": members,
                                                                     "weights": weights.tolist()}).encode()}, {
        **{k: v for k, v in card_stub.items() if k != "version"}, "config": config.model_dump(),
        "data_version": data_version(patches), "validation": metrics, "training_seconds": seconds,
        "trials": table.to_dict("records"), "golden": golden_record(val, proba)})
    return TrainedModel(card, table)
