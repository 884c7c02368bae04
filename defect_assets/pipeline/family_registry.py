"""The one ordered registry of model families (named ``family_registry``, not ``registry``:
``storage/registry.py`` is the model registry, where trained versions and their cards live).

A family is one ``register_family`` call: its name, its settings (a pydantic model, see
``pipeline/family_settings.py``), its training function (settings, inputs, model registry, log ->
``TrainedModel``), the upstream assets it trains on, the kind of artifact it registers (the card's
``kind``) and, for a kind ``ml/scorer.py`` does not know yet, how a scorer is built from such a
card. ``defs/`` builds every model asset, evaluation asset, the evaluation history's and the
champion's inputs and the training jobs from ``families()`` when the definitions are built, so a
family registered before that appears everywhere; ``pipes_training.py`` looks the family up here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from defect_assets.ml.scorer import ScorerLoader, register_scorer_kind, scorer_kinds
from defect_assets.pipeline.anomaly import train_anomaly
from defect_assets.pipeline.families import (
    TrainedModel,
    train_elastic_net,
    train_ensemble,
    train_fine_tuned_vgg16,
    train_scratch_cnn,
)
from defect_assets.pipeline.family_settings import (
    AnomalyConfig,
    ElasticNetConfig,
    EnsembleConfig,
    ScratchCNNConfig,
    VGG16Config,
)


@dataclass(frozen=True)
class Family:
    name: str
    settings: type[BaseModel]
    """The family's settings model; the training function receives an instance of it."""
    train: Callable[..., TrainedModel]
    """(settings, inputs: asset -> {batch: value} or value, ModelRegistry, log) -> TrainedModel."""
    inputs: tuple[str, ...]
    """Upstream assets it trains on (every built batch of each)."""
    artifact_kind: str
    """The ``kind`` of the cards it registers: what ``ml.scorer.load_registered`` loads it by."""
    kinds: frozenset[str]
    """Dagster kinds tags of its model asset."""

    @property
    def asset(self) -> str:
        return f"{self.name}_model"

    @property
    def evaluation(self) -> str:
        return f"{self.name}_evaluation"

    @property
    def module(self) -> str:
        """Where the training function lives: an external training process imports it, so a family
        registered at import of that module is known there too."""
        return self.train.__module__


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, settings: type[BaseModel], train: Callable[..., TrainedModel],
                    inputs: Iterable[str] | Callable[[tuple[Family, ...]], Iterable[str]], artifact_kind: str,
                    kinds: Iterable[str] = ("python",), scorer: ScorerLoader | None = None) -> Family:
    """Add a family at the end of the registry and return it. ``inputs`` may be a function of the
    families registered before it (the ensemble trains on all of them). ``scorer`` builds a
    ``Scorer`` from a card of ``artifact_kind`` (card, read_file, compiled, load_version) and is
    registered in ``ml/scorer.py``; without it the kind must be one that module already loads."""
    if name in _FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    if not isinstance(settings, type) or not issubclass(settings, BaseModel):
        raise TypeError(f"{name}: settings must be a pydantic model class, not {settings!r}")
    if scorer is not None:
        register_scorer_kind(artifact_kind, scorer)
    elif artifact_kind not in scorer_kinds():
        raise ValueError(f"{name}: ml/scorer.py loads no {artifact_kind!r} models (it knows "
                         f"{', '.join(scorer_kinds())}); pass scorer= to register one")
    ins = tuple(inputs(families()) if callable(inputs) else inputs)
    family = Family(name, settings, train, ins, artifact_kind, frozenset(kinds))
    _FAMILIES[name] = family
    return family


def families() -> tuple[Family, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())


def family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}") from None


KERAS_INPUTS = ("augmented_training_set", "labeled_patches")
KERAS_KINDS = ("tensorflow", "keras")

register_family("scratch_cnn", ScratchCNNConfig, train_scratch_cnn, KERAS_INPUTS, "keras", KERAS_KINDS)
register_family("fine_tuned_vgg16", VGG16Config, train_fine_tuned_vgg16, KERAS_INPUTS, "keras", KERAS_KINDS)
register_family("elastic_net", ElasticNetConfig, train_elastic_net, ("backbone_features",), "features+linear",
                ("scikitlearn",))
# trained on good images only (PatchCore-style); a candidate of its own and a member of the ensemble: on
# ELPV its evidence is not the elastic net's, and their average is better on validation than either
# (bench/results/ensemble_anomaly.txt)
register_family("anomaly", AnomalyConfig, train_anomaly, ("labeled_patches",), "anomaly", ("numpy",))
# the ensemble of the families before it: a candidate of its own, picked only when better on validation
register_family("ensemble", EnsembleConfig, train_ensemble,
                lambda before: (*(f.asset for f in before), "labeled_patches"), "ensemble", ("python",))
