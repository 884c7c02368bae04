"""The declarative automation of the code location, evaluated on a real (ephemeral) instance:
a model trained outside retrain_job is evaluated, the champion picked and deployed, the queue
scored again, all requested on one tick; a new batch alone requests nothing; a champion whose
blocking check failed is not deployed, and is deployed once a champion passes them all."""

import dagster as dg
import pytest

from defect_assets.definitions import build_defs
from defect_assets.defs.automation.conditions import SENSOR_NAME
from defect_assets.defs.evaluation.checks import CHAMPION_KEY
from defect_assets.pipeline.champion import GATES, RECALL

AFTER_TRAINING = {"champion_model", "champion_test_predictions", "deployed_endpoint", "evaluation_history",
                  "labeling_queue"}


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DEFECT_ASSETS_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    mp.setenv("DEFECT_ASSETS_STORAGE", "local")
    try:
        yield build_defs()
    finally:
        mp.undo()


def materialized(instance, *keys, partition=None):
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def gates(instance, failed=()):
    for name in GATES:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=CHAMPION_KEY, check_name=name, passed=name not in failed,
            severity=dg.AssetCheckSeverity.ERROR))


def requested(result) -> set[str]:
    return {key.to_user_string() for key in (r.key for r in result.results)
            if isinstance(key, dg.AssetKey) and result.get_num_requested(key)}


def keys_in_groups(defs, *groups) -> list[str]:
    graph = defs.resolve_asset_graph()
    return sorted(k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name in groups)


@pytest.fixture
def everything_built(defs):
    """An instance where every asset was built once and the champion passed its gates; the first
    evaluation (no cursor) is the baseline and requests nothing."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", ["b1"])
    materialized(instance, "raw_images", "image_labels", "labeled_patches", "augmented_training_set",
                 "backbone_features", "unlabeled_pool", partition="b1")
    materialized(instance, *[k for k in keys_in_groups(defs, "models") if k != "backbone_features"])
    materialized(instance, *keys_in_groups(defs, "evaluation"))
    gates(instance)
    materialized(instance, "deployed_endpoint", "labeling_queue")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0
    return instance, first.cursor


def test_the_code_location_has_one_automation_sensor_for_what_follows_training(defs):
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    conditioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert conditioned == set(keys_in_groups(defs, "evaluation")) | {"deployed_endpoint", "labeling_queue"}
    # training itself stays with retrain_sensor (rate limit, one retrain_job run): no model has a condition
    assert not conditioned & set(keys_in_groups(defs, "models", "ingest", "patches"))


def test_a_newly_trained_model_is_evaluated_checked_deployed_and_queued_on_one_tick(defs, everything_built):
    instance, cursor = everything_built
    materialized(instance, "scratch_cnn_model")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert requested(result) == {"scratch_cnn_evaluation"} | AFTER_TRAINING
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert again.total_requested == 0  # requested once, not on every tick


def test_a_new_batch_alone_requests_nothing_of_this(defs, everything_built):
    """A new batch updates labeled_patches, which every evaluation reads: retraining on it is
    retrain_sensor's decision, so no old model is re-evaluated and nothing is redeployed."""
    instance, cursor = everything_built
    instance.add_dynamic_partitions("batches", ["b2"])
    materialized(instance, "raw_images", "image_labels", "labeled_patches", "augmented_training_set",
                 "backbone_features", "unlabeled_pool", partition="b2")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert result.total_requested == 0


def test_a_champion_whose_blocking_check_failed_is_not_deployed(defs, everything_built):
    instance, cursor = everything_built
    materialized(instance, "champion_model")  # e.g. an evaluate_job run: champion and its checks
    gates(instance, failed={RECALL})
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert requested(result) == {"champion_test_predictions"}  # no deployment, so no new queue
    materialized(instance, "champion_test_predictions")  # what that request's run does
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0  # a failed gate is not retried on its own

    materialized(instance, "champion_model")  # the next champion passes every gate
    gates(instance)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result) == {"champion_test_predictions", "deployed_endpoint", "labeling_queue"}
