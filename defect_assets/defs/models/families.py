"""The Dagster side of the model families: each family's asset ``Config`` is generated from its
pydantic settings model (``pipeline/family_settings.py``, registered in
``pipeline/family_registry.py``) plus where it trains (``TrainingPlacement``), keeping every
field's description, default and choices for the launchpad. The families themselves, and what
is built from them, are read from ``family_registry.families()`` when the definitions are built.

``ScratchCNNConfig``, ``VGG16Config``, ``ElasticNetConfig``, ``EnsembleConfig`` and
``KerasTrainConfig`` here are those generated classes (run configs name them, e.g. the main job's
recipe in ``demo.py``)."""

from __future__ import annotations

import copy

import dagster as dg
import pydantic
from pydantic import BaseModel

from defect_assets.pipeline import family_settings as settings
from defect_assets.pipeline.family_registry import Family


class TrainingPlacement(dg.Config):
    """Where a model family trains (a setting of the asset, never written into the model card)."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True)  # its docstring describes the field
    through_pipes: bool = False
    """Train in an external process under Dagster Pipes (``python -m defect_assets.pipes_training``
    through ``dg.PipesSubprocessClient``; deploy/README.md shows the same on Azure ML), which
    reports each epoch and the registered model back to this asset. False: in this run's process."""


PLACEMENT_FIELDS = frozenset(TrainingPlacement.model_fields)
_GENERATED: dict[type[BaseModel], type[TrainingPlacement]] = {}


def dagster_config(model: type[BaseModel]) -> type[TrainingPlacement]:
    """The Dagster ``Config`` of a settings model: ``through_pipes`` first, then the model's own
    fields with their annotations (Literal choices), defaults and descriptions. One class per model."""
    if model not in _GENERATED:
        clash = PLACEMENT_FIELDS & set(model.model_fields)
        if clash:
            raise ValueError(f"{model.__name__}: {sorted(clash)} is a placement setting of every family")
        fields = {name: (f.annotation, copy.copy(f)) for name, f in model.model_fields.items()}
        _GENERATED[model] = pydantic.create_model(model.__name__, __base__=TrainingPlacement, __module__=__name__,
                                                  __doc__=model.__doc__ or TrainingPlacement.__doc__, **fields)
    return _GENERATED[model]


def config_class(family: Family) -> type[TrainingPlacement]:
    return dagster_config(family.settings)


def settings_of(family: Family, config: TrainingPlacement) -> BaseModel:
    """The family's settings model from its asset's config (the placement left out)."""
    return family.settings.model_validate(config.model_dump(exclude=PLACEMENT_FIELDS))


ElasticNetConfig = dagster_config(settings.ElasticNetConfig)
KerasTrainConfig = dagster_config(settings.KerasTrainConfig)
ScratchCNNConfig = dagster_config(settings.ScratchCNNConfig)
VGG16Config = dagster_config(settings.VGG16Config)
EnsembleConfig = dagster_config(settings.EnsembleConfig)
