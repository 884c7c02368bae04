"""Declarative automation of what follows a trained model: evaluation, the champion and its
checks, deployment and the next labeling queue. A model materialized outside ``retrain_job`` (a
``train_models_job`` run, one family from the UI) is evaluated, the champion is picked again, and
the champion is deployed only when every one of its blocking checks passed; the queue is then
scored by the deployed model. All of it happens in one run per tick (the downstream assets are
requested together, the champion's checks ride along and block deployment inside that run).

``retrain_job`` already runs this whole chain itself: an update made by a run that also targeted
the downstream asset is ignored (``any_deps_updated`` leaves out ``executed_with_root_target``),
so a retraining run never starts a second evaluation or deployment.

Each condition only listens to the dependencies named here (``allow``): a new batch updates
``labeled_patches``, which every evaluation reads, but a new batch alone must not re-evaluate old
models or redeploy; retraining on new data is ``retrain_sensor``'s job (``defs/automation/sensors.py``
says why that one stays a sensor).

The conditions are attached to the loaded assets by group and key (``with_automation_conditions``,
applied in ``definitions.py``), so the asset modules, whose families come from a registry, stay as
they are."""

import dagster as dg

from defect_assets.pipeline.settings import PipelineSettings

INTERVAL_ENV = PipelineSettings.env("automation_interval_seconds")
SENSOR_NAME = "after_training_automation"

TRAINED = dg.AssetSelection.groups("models", "evaluation") - dg.AssetSelection.assets("backbone_features")
"""What the evaluation group follows: model assets and the evaluation group itself."""
CHAMPION = dg.AssetSelection.assets("champion_model")
DEPLOYED = dg.AssetSelection.assets("deployed_endpoint")

EVALUATION_CONDITION = dg.AutomationCondition.eager().allow(TRAINED)
"""An evaluation, the history, the champion and its test predictions: after a model (or an
evaluation) updated, once none of those is missing or in progress."""
DEPLOY_CONDITION = (dg.AutomationCondition.eager().allow(CHAMPION)
                    & dg.AutomationCondition.all_deps_blocking_checks_passed().allow(CHAMPION))
"""The deployment: after the champion updated, and only if every blocking check of the champion
passed (or runs in the same run, where a failure stops the deployment)."""
QUEUE_CONDITION = dg.AutomationCondition.eager().allow(DEPLOYED)
"""The labeling queue: scored again by a newly deployed model (not by each new batch's pool)."""


def condition_for(spec: dg.AssetSpec) -> dg.AutomationCondition | None:
    if spec.key == dg.AssetKey("deployed_endpoint"):
        return DEPLOY_CONDITION
    if spec.key == dg.AssetKey("labeling_queue"):
        return QUEUE_CONDITION
    if spec.group_name == "evaluation":
        return EVALUATION_CONDITION
    return None


def _unique(items) -> list:
    """Each object once: a module that imports an asset (a check imports the asset it checks) holds
    it at module level too, and the defs-folder loader lists it once per module."""
    return list({id(item): item for item in items or []}.values())


def with_automation_conditions(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` (as loaded from the defs folder) with the conditions above on the evaluation group,
    the deployment and the queue, every definition listed once."""

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        condition = condition_for(spec)
        return spec if condition is None else spec.replace_attributes(automation_condition=condition)

    return dg.Definitions(assets=_unique(defs.assets), asset_checks=_unique(defs.asset_checks),
                          jobs=_unique(defs.jobs), sensors=_unique(defs.sensors), schedules=_unique(defs.schedules),
                          resources=defs.resources, executor=defs.executor, loggers=defs.loggers,
                          metadata=defs.metadata).map_asset_specs(func=attach)


def interval_seconds() -> int:
    """Seconds between evaluations of the conditions (default 30)."""
    return PipelineSettings.load().automation_interval_seconds


after_training_automation = dg.AutomationConditionSensorDefinition(
    SENSOR_NAME,
    target=dg.AssetSelection.groups("evaluation") | DEPLOYED | dg.AssetSelection.assets("labeling_queue"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=interval_seconds(),
    description="Evaluates a newly trained model, picks and checks the champion, deploys it when its blocking "
                "checks passed and scores the next labeling queue (declarative automation conditions).",
)
