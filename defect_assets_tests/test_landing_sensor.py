"""landing_zone_sensor against a local folder and a real Azurite container: complete batches
(manifest present) become partitions and exactly one run request per manifest version."""

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

import dagster as dg
import pytest

from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.landing.sensors import ETAG_TAG, landing_zone_sensor
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.resources import default_resources
from defect_assets.storage import ObjectStore
from defect_assets.storage.azure import AzureBlobObjectStore
from defect_assets.storage.batches import MANIFEST_NAME, upload_files
from defect_assets.storage.formats import read_value
from defect_assets_tests.azurite import ACCOUNT_KEY, REPO
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.daemon import DAGSTER_BIN, Daemon, wait_for
from defect_assets_tests.waits import READY_SECONDS, SUBPROCESS_SECONDS

pytest_plugins = ["defect_assets_tests.conftest_azurite"]  # the session-scoped `azurite` fixture

INGEST_ASSETS = [raw_images, image_labels]  # the part of prepare_batch_job that reads the landing zone


@dataclass
class Landing:
    """A landing zone to test on, with a raw uploader that bypasses the ObjectStore for Blob."""

    kind: str
    resources: dict
    store: ObjectStore
    instance: dg.DagsterInstance
    container: object = None  # azure-storage-blob ContainerClient on Azurite

    def put_raw(self, key: str, data: bytes) -> None:
        """An upload as a client outside the project would do it (azure-storage-blob for Blob)."""
        if self.container is not None:
            self.container.upload_blob(key, data, overwrite=True)
        else:
            self.store.write_bytes(key, data)


@pytest.fixture(params=["local", pytest.param("azurite", marks=pytest.mark.services)])
def landing(request, tmp_path, monkeypatch) -> Landing:
    if request.param == "local":
        resources = default_resources(tmp_path / "data")
        container = None
    else:
        server = request.getfixturevalue("azurite")
        suffix = uuid.uuid4().hex[:12]
        for var, value in {"DEFECT_ASSETS_STORAGE": "azure", "DEFECT_ASSETS_AZURE_ACCOUNT_URL": server.account_url,
                           "DEFECT_ASSETS_AZURE_LANDING_CONTAINER": f"landing-{suffix}",
                           "DEFECT_ASSETS_AZURE_ARTIFACT_CONTAINER": f"artifacts-{suffix}",
                           "AZURE_STORAGE_KEY": ACCOUNT_KEY}.items():
            monkeypatch.setenv(var, value)
        resources = default_resources()
        container = server.service_client().get_container_client(f"landing-{suffix}")
    store = resources["landing_zone"].open()
    return Landing(request.param, resources, store, dg.DagsterInstance.ephemeral(), container)


def images(n: int, seed: int = 0) -> dict[str, bytes]:
    return {f"cell{seed + i:03d}.png": png_bytes(smooth_image(40, 40, seed=seed + i)) for i in range(n)}


def labels_csv(names) -> bytes:
    return ("image,label\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(sorted(names)))).encode()


def upload_without_manifest(landing: Landing, batch: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        landing.put_raw(f"{batch}/{name}", data)


def tick(landing: Landing, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(cursor=cursor, instance=landing.instance,
                                      resources={"landing_zone": landing.resources["landing_zone"]})
    return landing_zone_sensor(context)


def apply_partitions(landing: Landing, result: dg.SensorResult) -> None:
    """What the sensor daemon does with the tick's dynamic partition requests."""
    for req in result.dynamic_partitions_requests or []:
        landing.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


def manifest_etag(landing: Landing, batch: str) -> str:
    return landing.store.info(f"{batch}/{MANIFEST_NAME}").etag


def ingested_images(landing: Landing, run_request: dg.RunRequest) -> list[str]:
    """Materialize the requested partition's ingestion; the images it took in."""
    result = dg.materialize(INGEST_ASSETS, partition_key=run_request.partition_key, instance=landing.instance,
                            resources=landing.resources, tags=run_request.tags)
    assert result.success
    inv = read_value(landing.resources["artifact_store"].open(), f"raw_images/{run_request.partition_key}").table
    return sorted(inv.loc[inv["role"] == "image", "path"])


def test_a_complete_batch_gives_its_partition_and_one_run_that_ingests_exactly_its_images(landing):
    files = images(5)
    upload_files(landing.store, "line-7", [*files.items(), ("labels.csv", labels_csv(files))])
    upload_without_manifest(landing, "other", images(2, seed=50))  # still uploading: ignored

    result = tick(landing, None)
    etag = manifest_etag(landing, "line-7")
    assert [(r.partition_key, r.run_key, r.tags[ETAG_TAG]) for r in result.run_requests] == \
        [("line-7", f"line-7:{etag}", etag)]
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in result.dynamic_partitions_requests] == \
        [(BATCHES, ["line-7"])]
    assert json.loads(result.cursor) == {"line-7": etag}
    apply_partitions(landing, result)
    assert landing.instance.get_dynamic_partitions(BATCHES) == ["line-7"]

    again = tick(landing, result.cursor)  # nothing changed since
    assert again.run_requests == [] and not again.dynamic_partitions_requests
    assert again.skip_reason.skip_message == "no new or re-uploaded batch (1 complete)"
    assert again.cursor == result.cursor

    assert ingested_images(landing, result.run_requests[0]) == sorted(files)
    labels = read_value(landing.resources["artifact_store"].open(), "image_labels/line-7")
    assert sorted(labels["image"]) == sorted(files) and len(labels) == 5


def test_blobs_without_manifest_never_trigger_and_the_manifest_triggers_once(landing):
    files = images(3, seed=10)
    upload_without_manifest(landing, "b2", {**files, "labels.csv": labels_csv(files)})
    first = tick(landing, None)
    assert first.run_requests == [] and not first.dynamic_partitions_requests and json.loads(first.cursor) == {}
    assert landing.instance.get_dynamic_partitions(BATCHES) == []

    upload_files(landing.store, "b2", [*files.items(), ("labels.csv", labels_csv(files))])  # manifest last
    second = tick(landing, first.cursor)
    assert [r.run_key for r in second.run_requests] == [f"b2:{manifest_etag(landing, 'b2')}"]
    apply_partitions(landing, second)
    assert tick(landing, second.cursor).run_requests == []
    assert landing.instance.get_dynamic_partitions(BATCHES) == ["b2"]


def test_the_same_tick_evaluated_twice_asks_for_one_run(landing):
    files = images(2, seed=20)
    upload_files(landing.store, "twice", [*files.items(), ("labels.csv", labels_csv(files))])
    first = tick(landing, None)
    apply_partitions(landing, first)
    second = tick(landing, None)  # the daemon crashed before it stored the new cursor
    keys = [r.run_key for r in first.run_requests] + [r.run_key for r in second.run_requests]
    assert len(keys) == 2 and len(set(keys)) == 1  # the daemon launches one run per run key
    assert not second.dynamic_partitions_requests  # already registered: not added twice
    assert second.cursor == first.cursor
    assert landing.instance.get_dynamic_partitions(BATCHES) == ["twice"]


def test_a_reupload_with_changes_asks_for_exactly_one_new_run(landing):
    files = images(4, seed=30)
    upload_files(landing.store, "re", [*files.items(), ("labels.csv", labels_csv(files))])
    first = tick(landing, None)
    apply_partitions(landing, first)
    assert ingested_images(landing, first.run_requests[0]) == sorted(files)

    changed = {**{k: v for k, v in files.items() if k != "cell030.png"}, **images(2, seed=90)}
    upload_files(landing.store, "re", [*changed.items(), ("labels.csv", labels_csv(changed))], overwrite=True)
    landing.store.delete("re/cell030.png")
    second = tick(landing, first.cursor)
    new_etag = manifest_etag(landing, "re")
    assert new_etag != json.loads(first.cursor)["re"]
    assert [r.run_key for r in second.run_requests] == [f"re:{new_etag}"]
    assert not second.dynamic_partitions_requests
    assert tick(landing, second.cursor).run_requests == []
    assert ingested_images(landing, second.run_requests[0]) == sorted(changed)
    assert landing.instance.get_dynamic_partitions(BATCHES) == ["re"]


def test_the_sensor_targets_prepare_batch_job_of_the_code_location():
    from defect_assets.definitions import build_defs

    defs = build_defs()

    merged = dg.Definitions.merge(defs, dg.Definitions(sensors=[landing_zone_sensor]))
    dg.Definitions.validate_loadable(merged)
    assert merged.resolve_sensor_def("landing_zone_sensor").job_name == "prepare_batch_job"
    job = merged.resolve_job_def("prepare_batch_job")
    assert job.partitions_def.name == BATCHES
    assert {"raw_images", "image_labels"} <= {k.to_user_string() for k in job.asset_layer.selected_asset_keys}


# --- a real dagster-daemon on Azurite ---------------------------------------------------------

def failure_of(instance, run_id: str) -> str:
    """Why a run failed, as its event log says (step and run failures with their errors), for the
    assertion message: a daemon run's traceback is otherwise only in its own compute logs."""
    lines = []
    for e in instance.all_logs(run_id):
        ev = e.dagster_event
        if ev is not None and (ev.is_failure or ev.event_type_value in ("RUN_FAILURE", "ENGINE_EVENT")):
            error = getattr(ev.event_specific_data, "error", None)
            lines.append(f"{ev.event_type_value} {ev.step_key or ''}: {ev.message or ''}"
                         + (f"\n{error.to_string()}" if error is not None else ""))
    return "\n".join(lines[-12:]) or "no failure event"


@pytest.mark.services
@pytest.mark.slow
def test_a_real_daemon_picks_up_uploads_and_a_crash_loses_or_duplicates_no_batch(azurite, tmp_path, monkeypatch):
    suffix = uuid.uuid4().hex[:12]
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: defect_assets_tests.landing_daemon_location\n"
        f"      working_directory: {REPO}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_STORAGE": "azure",
           "DEFECT_ASSETS_AZURE_ACCOUNT_URL": azurite.account_url,
           "DEFECT_ASSETS_AZURE_LANDING_CONTAINER": f"landing-{suffix}",
           "DEFECT_ASSETS_AZURE_ARTIFACT_CONTAINER": f"artifacts-{suffix}",
           "AZURE_STORAGE_KEY": ACCOUNT_KEY, "DEFECT_ASSETS_LANDING_SENSOR_INTERVAL_SECONDS": "3"}
    env.pop("AZURE_STORAGE_SAS_TOKEN", None)
    container = azurite.service_client().get_container_client(f"landing-{suffix}")
    container.create_container()
    store = AzureBlobObjectStore(container)

    def put(batch: str, seed: int, manifest: bool = True) -> list[str]:
        files = images(3, seed=seed)
        if manifest:
            upload_files(store, batch, [*files.items(), ("labels.csv", labels_csv(files))])
        else:
            for name, data in files.items():  # azure-storage-blob straight, as an outside uploader
                container.upload_blob(f"{batch}/{name}", data)
        return sorted(files)

    subprocess.run([str(DAGSTER_BIN), "sensor", "start", "landing_zone_sensor", "-w", "workspace.yaml"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=SUBPROCESS_SECONDS)
    daemon = Daemon(tmp_path, env)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()  # the daemon's instance, read from this process
    try:
        daemon.start()
        expected = {"first": put("first", 100)}
        put("half", 200, manifest=False)  # no manifest yet: must not run
        wait_for("a run for batch 'first'", lambda: instance.get_runs(), daemon, READY_SECONDS)
        daemon.kill()  # mid-way: the run is queued or running, the tick may not have been saved

        expected["second"] = put("second", 300)  # arrives while the daemon is down
        daemon.start()

        def all_done():
            runs = instance.get_runs()
            return len(runs) >= 2 and all(r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                                          for r in runs)

        wait_for("both batches' runs to finish", all_done, daemon, SUBPROCESS_SECONDS)
        time.sleep(4)  # one more sensor tick: it must add nothing
    finally:
        daemon.stop_all()

    runs = instance.get_runs()
    by_batch = {}
    for r in runs:
        by_batch.setdefault(r.tags["dagster/partition"], []).append(r)
    assert sorted(by_batch) == ["first", "second"]  # nothing lost, 'half' (no manifest) never ran
    assert all(len(rs) == 1 for rs in by_batch.values())  # nothing duplicated
    for batch, (r,) in by_batch.items():
        assert r.status == dg.DagsterRunStatus.SUCCESS, (batch, failure_of(instance, r.run_id))
        assert r.tags["dagster/run_key"] == f"{batch}:{store.info(f'{batch}/_manifest.json').etag}"
    assert sorted(instance.get_dynamic_partitions(BATCHES)) == ["first", "second"]
    artifacts = AzureBlobObjectStore(azurite.service_client().get_container_client(f"artifacts-{suffix}"))
    for batch, names in expected.items():
        inv = read_value(artifacts, f"raw_images/{batch}").table
        assert sorted(inv.loc[inv["role"] == "image", "path"]) == names
    instance.dispose()
