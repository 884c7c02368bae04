"""The defect_assets code location, loaded lazily: every asset, check, job, sensor and schedule
defined at module level under ``defect_assets/defs`` (``dg.load_from_defs_folder``, configured
by ``[tool.dg.project]`` in pyproject.toml), the automation conditions of what follows training
(``defs/automation/conditions.py``) and the resources chosen from the environment
(``defs/resources.py``).

``dagster dev``, ``dagster asset materialize -m defect_assets.definitions`` and workspace.yaml load
``defs``; Python callers (the main job, tests) call ``build_defs()`` once the environment is set."""

from pathlib import Path

import dagster as dg

from defect_assets.defs.automation.conditions import with_automation_conditions
from defect_assets.defs.evaluation.assets import build_evaluation_assets
from defect_assets.defs.jobs import build_train_models_job
from defect_assets.defs.models.assets import build_model_assets
from defect_assets.defs.resources import default_resources


def build_defs() -> dg.Definitions:
    """The code location's Definitions: what is defined at module level under ``defs/`` (the
    defs-folder loader), the model, evaluation and champion assets and ``train_models_job`` built
    from the model families registered at this point (``pipeline.family_registry``), the automation
    conditions, and the resources read from the environment now."""
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    from_registry = dg.Definitions(assets=[*build_model_assets(), *build_evaluation_assets()],
                                   jobs=[build_train_models_job()])
    return dg.Definitions.merge(with_automation_conditions(dg.Definitions.merge(loaded, from_registry)),
                                dg.Definitions(resources=default_resources()))


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
