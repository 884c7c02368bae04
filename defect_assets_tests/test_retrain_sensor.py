"""retrain_sensor: retrains once per burst of new batches, never on a tick with nothing new."""

import json

import dagster as dg

from defect_assets.defs.automation.sensors import MIN_INTERVAL_ENV, retrain_sensor


def tick(instance, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = retrain_sensor(ctx)
    return result, ctx.cursor


def built(instance, asset, batch):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=batch))


def test_retrains_once_per_burst_and_respects_the_interval(monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", ["b1", "b2", "b3"])
    built(instance, "augmented_training_set", "b1")
    monkeypatch.setenv(MIN_INTERVAL_ENV, "0")

    first, cursor = tick(instance, None)
    assert isinstance(first, dg.SkipReason) and "first tick" in first.skip_message
    again, cursor = tick(instance, cursor)
    assert isinstance(again, dg.SkipReason) and "no new batch" in again.skip_message

    built(instance, "augmented_training_set", "b2")
    built(instance, "backbone_features", "b2")
    req, cursor = tick(instance, cursor)
    assert isinstance(req, dg.RunRequest) and req.run_key.startswith("retrain-")
    same, cursor2 = tick(instance, cursor)  # the same data never asks twice
    assert isinstance(same, dg.SkipReason) and cursor2 == cursor

    monkeypatch.setenv(MIN_INTERVAL_ENV, "60")
    built(instance, "image_labels", "b3")  # new labels arrive minutes later
    wait, cursor3 = tick(instance, cursor)
    assert isinstance(wait, dg.SkipReason) and "minimum interval" in wait.skip_message
    assert json.loads(cursor3)["upstream"] == json.loads(cursor)["upstream"]  # still pending, not forgotten
    monkeypatch.setenv(MIN_INTERVAL_ENV, "0")
    later, _ = tick(instance, cursor3)
    assert isinstance(later, dg.RunRequest) and later.run_key != req.run_key
