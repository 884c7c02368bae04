"""From the labeling page to retraining under a real dagster-daemon: labels posted to the real
labeling API make new_labels_sensor start one relabel_batch_job run, which really runs and
builds a new label version of the batch; retrain_sensor then asks for exactly one retrain_job
run, and more labels a minute later rebuild the batch again but do not retrain again (the
retrain sensor's rate limit holds). Retraining runs are queued, not launched (a tag limit of 0
on the retrain sensor's runs): what is tested is what the daemon decides."""

import json
import os
import subprocess
import time

import dagster as dg
import pytest

from defect_assets.defs.active_learning.sensors import LABEL_EVENTS_TAG
from defect_assets.defs.automation.sensors import UPSTREAM_EVENT_TAG, newest_upstream
from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.resources import default_resources
from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline.active_learning import QueueSettings, publish_next_queue
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value
from defect_assets.storage.labeling import LabelLog
from defect_assets_tests.azurite import REPO
from defect_assets_tests.daemon import DAGSTER_BIN, Daemon, wait_for
from defect_assets_tests.helpers.labeling import ANA, BEN, LABELERS, jcall
from defect_assets_tests.helpers.serving import ServiceThread, model_registry
from defect_assets_tests.waits import SUBPROCESS_SECONDS

# Relabel runs launch (two at a time); runs carrying the retrain sensor's tag stay queued.
INSTANCE = f"""telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: "{UPSTREAM_EVENT_TAG}"
        limit: 0
"""


def runs(instance: dg.DagsterInstance, **tags) -> list:
    return instance.get_runs(dg.RunsFilter(tags=tags))


@pytest.mark.services
@pytest.mark.slow
def test_new_labels_rebuild_the_batch_and_retrain_exactly_once(tmp_path, monkeypatch):
    from defect_assets.defs.active_learning.assets import unlabeled_pool
    from defect_assets.ml.synthetic import write_synthetic_surfaces

    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: defect_assets.definitions\n"
        f"      working_directory: {REPO}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_DATA_DIR": str(data),
           "DEFECT_ASSETS_STORAGE": "local", "DEFECT_ASSETS_LABELS_SENSOR_INTERVAL_SECONDS": "2",
           "DEFECT_ASSETS_RETRAIN_SENSOR_INTERVAL_SECONDS": "2", "DEFECT_ASSETS_RETRAIN_MIN_INTERVAL_MINUTES": "60"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()

    # a batch that arrived without labels, prepared; a tiny model in production; its queue
    store, registry, versions = model_registry(data)
    registry.promote(versions["a"], threshold=0.5)
    folder = tmp_path / "line-7"
    write_synthetic_surfaces(folder, n_images=6, seed=21, width=192, height=160, defects_per_image=(0, 2))
    (folder / "points.csv").unlink()
    upload_folder(folder, LocalObjectStore(data / "landing"), "line-7")
    instance.add_dynamic_partitions(BATCHES, ["line-7"])
    assert dg.materialize([raw_images, image_labels, unlabeled_pool], partition_key="line-7", instance=instance,
                          resources=default_resources(data)).success
    queue = publish_next_queue(store, load_registered(registry, versions["a"]),
                               read_value(store, "unlabeled_pool/line-7"), QueueSettings(per_round=6), heatmaps=False)
    ids = queue.items.sort_values("rank")["item_id"].tolist()

    def cli(*args):
        return subprocess.run([str(DAGSTER_BIN), *args, "-w", "workspace.yaml"], cwd=tmp_path, env=env,
                              check=True, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)

    cli("sensor", "cursor", "retrain_sensor", "--set",
        json.dumps({"upstream": newest_upstream(instance), "requested_at": 0.0}))
    cli("sensor", "start", "retrain_sensor")
    daemon = Daemon(tmp_path, env)
    settings = ServiceSettings(store=store, reload_seconds=0.2, labelers=LABELERS)
    try:
        with ServiceThread(settings) as svc:
            # three posts (one a repeat), stored before the daemon starts: one batch of new labels
            for token, item, label in [(ANA, ids[0], "defect"), (BEN, ids[1], "ok"), (ANA, ids[0], "defect")]:
                assert jcall(svc.port, "POST", "/v1/labeling/labels", token, {"item_id": item, "label": label})[0] \
                    in (200, 201)
            daemon.start()
            digest = LabelLog(store).digests()["line-7"]

            def relabeled(d):
                return lambda: [r for r in runs(instance, **{LABEL_EVENTS_TAG: d})
                                if r.status == dg.DagsterRunStatus.SUCCESS]

            wait_for("a successful relabel run for the new labels", relabeled(digest), daemon, SUBPROCESS_SECONDS)
            wait_for("a retraining request", lambda: runs(instance, **{"dagster/sensor_name": "retrain_sensor"}),
                     daemon, 120)
            time.sleep(8)  # several more ticks of both sensors: nothing more may be asked for
            assert len(runs(instance, **{"dagster/sensor_name": "retrain_sensor"})) == 1

            # more labels later: the batch is rebuilt again, retraining waits for its minimum interval
            assert jcall(svc.port, "POST", "/v1/labeling/labels", BEN, {"item_id": ids[2], "label": "defect"})[0] \
                == 201
            second = LabelLog(store).digests()["line-7"]
            wait_for("a relabel run for the later label", relabeled(second), daemon, SUBPROCESS_SECONDS)
            time.sleep(8)
    finally:
        daemon.stop_all()

    relabel = runs(instance, **{"dagster/sensor_name": "new_labels_sensor"})
    assert sorted((r.tags[LABEL_EVENTS_TAG], r.job_name, r.tags["dagster/partition"]) for r in relabel) == \
        sorted([(digest, "relabel_batch_job", "line-7"), (second, "relabel_batch_job", "line-7")])
    retrain = runs(instance, **{"dagster/sensor_name": "retrain_sensor"})
    assert len(retrain) == 1 and retrain[0].job_name == "retrain_job"
    assert retrain[0].status == dg.DagsterRunStatus.QUEUED
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("image_labels"), asset_partitions=["line-7"]), limit=1,
        ascending=False).records[0].asset_materialization
    assert latest.metadata["page_labels"].value == 3 and latest.metadata["label_events"].value == second
    labels = read_value(store, "image_labels/line-7")
    page = labels[labels["source"] == "labeling page"]
    assert sorted(page["label"]) == ["defect", "defect", "ok"]
    assert len(read_value(store, "unlabeled_pool/line-7")) == 3
    assert len(read_value(store, "labeled_patches/line-7").table) == 3
    assert len(read_value(store, "backbone_features/line-7").arrays["features"]) == 3
    instance.dispose()
