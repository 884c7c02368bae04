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


def test_landing_sensor_does_not_rebuild_a_batch_built_at_the_same_manifest(tmp_path, surface_folder):
    """The main job tags its runs with the manifest etag; a first sensor tick (empty cursor)
    then registers nothing new to build, and a re-upload is built again."""
    from defect_assets.defs.ingest.assets import image_labels, raw_images
    from defect_assets.defs.landing.sensors import ETAG_TAG, landing_zone_sensor
    from defect_assets.defs.resources import default_resources
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.batches import list_batches, upload_folder

    instance = dg.DagsterInstance.ephemeral()
    resources = default_resources(tmp_path / "data")
    landing = LocalObjectStore(tmp_path / "data" / "landing")
    upload_folder(surface_folder, landing, "built")
    etag = list_batches(landing)["built"]
    instance.add_dynamic_partitions("batches", ["built"])
    assert dg.materialize([raw_images, image_labels], partition_key="built", instance=instance,
                          resources=resources, tags={ETAG_TAG: etag}).success

    def run_requests(cursor):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"landing_zone": resources["landing_zone"]})
        result = landing_zone_sensor(ctx)
        return result.run_requests or [], result.cursor

    first, cursor = run_requests(None)
    assert first == [] and json.loads(cursor) == {"built": etag}
    upload_folder(surface_folder, landing, "built", overwrite=True)
    again, _ = run_requests(cursor)
    assert [r.partition_key for r in again] == ["built"]


def test_a_batch_that_differs_is_held_back_until_some_of_its_images_are_labeled(monkeypatch):
    from defect_assets.defs.automation.sensors import held_back

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", ["b1", "odd"])
    built(instance, "augmented_training_set", "b1")
    monkeypatch.setenv(MIN_INTERVAL_ENV, "0")
    _, cursor = tick(instance, None)
    built(instance, "augmented_training_set", "odd")
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "batch_drift", partition="odd", metadata={"differs": True, "reason": "domain AUC 0.990 >= 0.75"}))
    skip, cursor = tick(instance, cursor)
    assert isinstance(skip, dg.SkipReason) and "held back" in skip.skip_message
    assert "batch odd: domain AUC 0.990" in skip.skip_message
    assert held_back(instance, 0) == {"odd": "domain AUC 0.990 >= 0.75"}
    built(instance, "image_labels", "odd")  # some of its images were labeled: released
    assert held_back(instance, 0) == {}
    req, _ = tick(instance, cursor)
    assert isinstance(req, dg.RunRequest)
