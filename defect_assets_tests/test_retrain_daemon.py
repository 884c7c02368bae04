"""retrain_sensor and nightly_retrain_schedule of the real code location, ticked by a real
dagster-daemon: a burst of three new batches gives exactly one retraining run, and the schedule
(set to every minute) starts retrain_job on its own. The instance queues runs without
launching them (QueuedRunCoordinator, limit 0): what is tested is what the daemon decides,
not another training run."""

import json
import os
import subprocess
import time

import dagster as dg
import pytest

from defect_assets.defs.automation.sensors import UPSTREAM_EVENT_TAG, newest_upstream
from defect_assets.defs.partitions import BATCHES
from defect_assets_tests.azurite import REPO
from defect_assets_tests.daemon import DAGSTER_BIN, Daemon, wait_for
from defect_assets_tests.waits import SUBPROCESS_SECONDS

QUEUE_ONLY = """telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 0
"""


def built(instance: dg.DagsterInstance, batch: str) -> None:
    """What a prepare_batch_job run leaves behind for the sensor: new training inputs of a batch."""
    instance.report_runless_asset_event(dg.AssetMaterialization("augmented_training_set", partition=batch))


def runs_of(instance: dg.DagsterInstance, tag: str, name: str) -> list:
    return instance.get_runs(dg.RunsFilter(tags={tag: name}))


def sensor_ticks_after(instance: dg.DagsterInstance, name: str, after: float) -> list:
    """The sensor's finished ticks that started after ``after`` (a time.time() value)."""
    for state in instance.all_instigator_state():
        if state.instigator_name == name:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after)
            return [t for t in ticks if t.status.value in ("SKIPPED", "SUCCESS", "FAILURE")]
    return []


@pytest.mark.services
@pytest.mark.slow
def test_a_real_daemon_retrains_once_per_burst_and_runs_the_nightly_schedule(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(QUEUE_ONLY)
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: defect_assets.definitions\n"
        f"      working_directory: {REPO}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data"),
           "DEFECT_ASSETS_RETRAIN_SENSOR_INTERVAL_SECONDS": "2", "DEFECT_ASSETS_RETRAIN_MIN_INTERVAL_MINUTES": "60",
           "DEFECT_ASSETS_NIGHTLY_CRON": "* * * * *", "DEFECT_ASSETS_STORAGE": "local"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()  # the daemon's instance, read and written from this process
    instance.add_dynamic_partitions(BATCHES, ["b0", "b1", "b2", "b3"])
    built(instance, "b0")  # trained on already (e.g. by the main job): the sensor starts from here

    def cli(*args):
        return subprocess.run([str(DAGSTER_BIN), *args, "-w", "workspace.yaml"], cwd=tmp_path, env=env,
                              check=True, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)

    cli("sensor", "cursor", "retrain_sensor", "--set",
        json.dumps({"upstream": newest_upstream(instance), "requested_at": 0.0}))
    cli("sensor", "start", "retrain_sensor")  # setting a cursor by hand leaves a sensor stopped
    cli("schedule", "start", "nightly_retrain_schedule")
    daemon = Daemon(tmp_path, env)
    later_ticks = []
    try:
        daemon.start()
        built(instance, "b1")  # the burst starts: one retraining run
        wait_for("a retraining run from the sensor", lambda: runs_of(instance, "dagster/sensor_name", "retrain_sensor"),
                 daemon, 120)
        for batch in ("b2", "b3"):  # the rest of the burst, each seen by a tick of its own
            arrived = time.time()
            built(instance, batch)
            wait_for(f"a sensor tick after {batch}",
                     lambda t=arrived: sensor_ticks_after(instance, "retrain_sensor", t), daemon, 120)
            later_ticks += sensor_ticks_after(instance, "retrain_sensor", arrived)
        wait_for("a run from the nightly schedule",
                 lambda: runs_of(instance, "dagster/schedule_name", "nightly_retrain_schedule"), daemon, 150)
    finally:
        daemon.stop_all()

    from_sensor = runs_of(instance, "dagster/sensor_name", "retrain_sensor")
    assert len(from_sensor) == 1, [r.tags for r in from_sensor]
    run = from_sensor[0]
    assert run.job_name == "retrain_job" and run.status == dg.DagsterRunStatus.QUEUED
    assert int(run.tags[UPSTREAM_EVENT_TAG]) > 0
    # b2 and b3 were evaluated and held back by the minimum interval, not missed
    assert later_ticks and all("minimum interval" in (t.skip_reason or "") for t in later_ticks), \
        [(t.status, t.skip_reason) for t in later_ticks]
    scheduled = runs_of(instance, "dagster/schedule_name", "nightly_retrain_schedule")
    assert scheduled and {r.job_name for r in scheduled} == {"retrain_job"}
    instance.dispose()


@pytest.mark.services
@pytest.mark.slow
def test_a_real_daemon_holds_a_batch_that_differs_back_from_retrain_job(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(QUEUE_ONLY)
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: defect_assets.definitions\n"
        f"      working_directory: {REPO}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data"),
           "DEFECT_ASSETS_RETRAIN_SENSOR_INTERVAL_SECONDS": "2", "DEFECT_ASSETS_RETRAIN_MIN_INTERVAL_MINUTES": "0",
           "DEFECT_ASSETS_STORAGE": "local"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(BATCHES, ["b0", "odd"])
    built(instance, "b0")

    def cli(*args):
        return subprocess.run([str(DAGSTER_BIN), *args, "-w", "workspace.yaml"], cwd=tmp_path, env=env,
                              check=True, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)

    cli("sensor", "cursor", "retrain_sensor", "--set",
        json.dumps({"upstream": newest_upstream(instance), "requested_at": 0.0}))
    cli("sensor", "start", "retrain_sensor")
    daemon = Daemon(tmp_path, env)
    try:
        daemon.start()
        arrived = time.time()
        # what prepare_batch_job leaves for a batch whose drift asset found it unlike training
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "batch_drift", partition="odd",
            metadata={"differs": True, "reason": "domain AUC 0.990 >= 0.75 (p = 0.020): label some of its images"}))
        built(instance, "odd")

        def held_tick():
            return [t for t in sensor_ticks_after(instance, "retrain_sensor", arrived)
                    if "held back" in (t.skip_reason or "")]

        wait_for("a tick holding the batch back", held_tick, daemon, 120)
        reason = held_tick()[0].skip_reason
        later = time.time()
        wait_for("another tick", lambda: sensor_ticks_after(instance, "retrain_sensor", later), daemon, 120)
    finally:
        daemon.stop_all()
    assert "batch odd" in reason and "domain AUC 0.990" in reason and "label some of its images" in reason
    assert runs_of(instance, "dagster/sensor_name", "retrain_sensor") == []
    instance.dispose()
