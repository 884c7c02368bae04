"""The production Dagster instance as shipped (deploy/dagster.yaml) on a real PostgreSQL: Debian's
server on 127.0.0.1, the code location as a separate ``dagster api grpc`` server (as the
code-location container runs it), ``dagster-webserver`` and ``dagster-daemon`` on that instance.
Two uploaded batches are each prepared by a run that the landing sensor asked for and the daemon
dequeued, one at a time (the queue's limit), and the webserver lists both runs from PostgreSQL.

The one departure from the shipped file: compute logs go to a local folder, not to Azure Blob
Storage (no Azure account here)."""

import json
import os
import subprocess
import time
import urllib.request

import dagster as dg
import pytest
import yaml

from defect_assets.defs.jobs import COMPUTE_TAG
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value
from defect_assets_tests.azurite import REPO
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.daemon import DAGSTER_BIN, Daemon, wait_for
from defect_assets_tests.dask_cluster import free_port
from defect_assets_tests.postgres import LocalPostgres
from defect_assets_tests.waits import READY_SECONDS, SUBPROCESS_SECONDS

SHIPPED = REPO / "deploy" / "dagster.yaml"
BIN = DAGSTER_BIN.parent


def instance_yaml(compute_logs_dir) -> str:
    config = yaml.safe_load(SHIPPED.read_text())
    config["compute_logs"] = {"module": "dagster.core.storage.local_compute_log_manager",
                              "class": "LocalComputeLogManager", "config": {"base_dir": str(compute_logs_dir)}}
    return yaml.safe_dump(config)


def batch_folder(root, name: str, seed: int, n: int = 3):
    folder = root / name
    folder.mkdir(parents=True)
    names = []
    for i in range(n):
        (folder / f"img{i}.png").write_bytes(png_bytes(smooth_image(48, 64, seed=seed + i)))
        names.append(f"img{i}.png")
    (folder / "labels.csv").write_text("image,label\n" + "".join(f"{f},{i % 2}\n" for i, f in enumerate(names)))
    return folder, names


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s: {log.read_text(errors='replace')[-2000:]}")


def graphql_runs(port: int) -> dict[str, str]:
    query = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        results = json.load(r)["data"]["runsOrError"]["results"]
    return {r["runId"]: r["status"] for r in results}


def start(args: list[str], cwd, env, log) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(3 * SUBPROCESS_SECONDS)
def test_postgres_instance_daemon_and_grpc_location_prepare_two_uploads_one_run_at_a_time(tmp_path, monkeypatch):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(tmp_path / "compute_logs"))
    grpc_port, web_port = free_port(), free_port()
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": grpc_port, "location_name": "defect_assets"}}]}))
    with LocalPostgres() as pg:
        env = {**os.environ, **pg.env(), "DAGSTER_HOME": str(home), "DAGSTER_MAX_CONCURRENT_RUNS": "1",
               "DEFECT_ASSETS_STORAGE": "local", "DEFECT_ASSETS_DATA_DIR": str(data),
               "DEFECT_ASSETS_LANDING_SENSOR_INTERVAL_SECONDS": "2", "PYTHONPATH": str(REPO)}
        for k, v in env.items():
            if k.startswith(("DAGSTER_", "PG")):
                monkeypatch.setenv(k, v)
        code = web = None
        daemon = Daemon(tmp_path, env)
        try:
            # the code location as its own gRPC server; runs execute in processes it starts
            code = start([str(BIN / "dagster"), "api", "grpc", "-m", "defect_assets_tests.landing_daemon_location",
                          "-h", "127.0.0.1", "-p", str(grpc_port), "--working-directory", str(REPO)],
                         tmp_path, env, tmp_path / "grpc.log")
            deadline = time.monotonic() + READY_SECONDS
            while subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(grpc_port),
                                  "--host", "127.0.0.1"], env=env, capture_output=True).returncode != 0:
                assert code.poll() is None and time.monotonic() < deadline, (tmp_path / "grpc.log").read_text()
                time.sleep(0.5)
            web = start([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                         "-w", "workspace.yaml"], tmp_path, env, tmp_path / "webserver.log")
            subprocess.run([str(BIN / "dagster"), "sensor", "start", "landing_zone_sensor", "-w", "workspace.yaml"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, timeout=SUBPROCESS_SECONDS)
            instance = dg.DagsterInstance.get()  # the same PostgreSQL instance, read from this process
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            queue = instance.run_coordinator.get_run_queue_config()
            assert queue.max_concurrent_runs == 1
            assert [(t["key"], t["value"], t["limit"]) for t in queue.tag_concurrency_limits] == \
                [(COMPUTE_TAG, "training", 1)]

            landing = LocalObjectStore(data / "landing")
            expected = {}
            for name, seed in (("line-a", 10), ("line-b", 20)):
                folder, names = batch_folder(tmp_path / "uploads", name, seed)
                upload_folder(folder, landing, name)
                expected[name] = names
            daemon.start()

            def both_done():
                runs = instance.get_runs()
                return len(runs) >= 2 and all(r.is_finished for r in runs)

            t0 = time.monotonic()
            wait_for("both batches' runs to finish", both_done, daemon, SUBPROCESS_SECONDS)
            print(f"daemon started -> both runs finished: {time.monotonic() - t0:.1f} s")
            wait_http(f"http://127.0.0.1:{web_port}/server_info", READY_SECONDS, web, tmp_path / "webserver.log")
            listed = graphql_runs(web_port)
        finally:
            daemon.stop_all()
            stop(web)
            stop(code)

        records = instance.get_run_records()
        assert len(records) == 2, [r.dagster_run.tags for r in records]
        by_batch = {r.dagster_run.tags["dagster/partition"]: r for r in records}
        assert sorted(by_batch) == ["line-a", "line-b"]
        for batch, rec in by_batch.items():
            run = rec.dagster_run
            assert run.status == dg.DagsterRunStatus.SUCCESS, batch
            assert run.tags["dagster/sensor_name"] == "landing_zone_sensor"
            events = {e.dagster_event.event_type for e in instance.all_logs(run.run_id) if e.dagster_event}
            # queued by the QueuedRunCoordinator, then launched by the daemon's queue
            assert {dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_STARTING,
                    dg.DagsterEventType.RUN_SUCCESS} <= events, batch
            inv = read_value(LocalObjectStore(data / "artifacts"), f"raw_images/{batch}").table
            assert sorted(inv.loc[inv["role"] == "image", "path"]) == expected[batch]
        first, second = sorted(records, key=lambda r: r.start_time)
        assert second.start_time >= first.end_time  # the limit of one: never two runs at once
        assert listed == {r.dagster_run.run_id: "SUCCESS" for r in records}  # the webserver reads PostgreSQL
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname=pg.db)
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == 2
        finally:
            conn.close()
        instance.dispose()
