"""Per-image work on Dask: a real ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1 compute backbone features and pool scores equal to the in-process ones, each worker
loading its extractor / model once, and a worker killed mid-shard loses no shard and doubles none.
Plus the engine's in-process path and its assembly rules, without any cluster."""

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from defect_assets.ml.images import encode_png
from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline import engine
from defect_assets.pipeline.active_learning import score_pool
from defect_assets.pipeline.features import backbone_features
from defect_assets.pipeline.tiny import register_tiny_model
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.env import StoreConfig
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.dask_cluster import LocalDaskCluster, slow_backbone_task
from defect_assets_tests.waits import READY_SECONDS, SUBPROCESS_SECONDS

TOL = 1e-6
VGG_BLOCK3 = {"backbone": "vgg16", "blocks": [3], "weights": "offline"}  # the engine is what is tested: a small VGG cut


def patches(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def test_in_process_shards_come_back_in_order_with_one_load_per_call():
    loads = []

    def task(config, payload, cache):
        cache.get("model", config, lambda: loads.append(1))
        return np.asarray(payload, np.float64)[:, None] * config["scale"]

    seen = []
    out = engine.map_shards(task, {"scale": 2.0}, lambda s: list(range(s.lo, s.hi)), 10, empty=np.zeros((0, 1)),
                            shard_size=3, address="", progress=lambda i, n: seen.append((i, n)))
    assert out[:, 0].tolist() == [2.0 * i for i in range(10)]
    assert len(loads) == 1
    assert seen == [(3, 10), (6, 10), (9, 10), (10, 10)]
    assert engine.map_shards(task, {"scale": 1.0}, lambda s: [], 0, empty=np.zeros((0, 1)), address="").shape == (0, 1)


def test_assembly_refuses_a_missing_or_short_shard():
    shards = engine.plan_shards(5, 2, "t")
    assert [(s.id, s.lo, s.hi) for s in shards] == [("t-000000", 0, 2), ("t-000001", 2, 4), ("t-000002", 4, 5)]
    rows = {s.id: np.zeros((s.hi - s.lo, 1)) for s in shards}
    assert engine.assemble(shards, rows).shape == (5, 1)
    with pytest.raises(RuntimeError, match="missing"):
        engine.assemble(shards, {k: v for k, v in rows.items() if k != "t-000001"})
    with pytest.raises(RuntimeError, match="returned 1 rows for 2"):
        engine.assemble(shards, {**rows, "t-000000": np.zeros((1, 1))})


def test_no_address_in_the_environment_means_in_process(monkeypatch):
    monkeypatch.delenv(engine.DASK_ADDRESS_ENV, raising=False)
    assert engine.dask_address() == ""
    monkeypatch.setenv(engine.DASK_ADDRESS_ENV, " tcp://127.0.0.1:8786 ")
    assert engine.dask_address() == "tcp://127.0.0.1:8786"


def test_a_store_config_for_workers_names_the_credential_variable_never_its_value(monkeypatch, tmp_path):
    import dagster as dg
    from dagster_azure.blob import AzureBlobStorageKeyCredential

    from defect_assets.defs.resources import AzureBlobStorage, LocalStorage

    monkeypatch.setenv("AZURE_STORAGE_KEY", "a-secret-key-value")
    blob = AzureBlobStorage(account_url="https://acct.blob.core.windows.net", container="artifacts", prefix="p",
                            credential=AzureBlobStorageKeyCredential(key=dg.EnvVar("AZURE_STORAGE_KEY")))
    config = blob.store_config()
    assert (config.kind, config.container, config.prefix) == ("azure", "artifacts", "p")
    assert (config.credential_kind, config.credential_env) == ("key", "AZURE_STORAGE_KEY")
    assert "a-secret-key-value" not in repr(config)
    assert LocalStorage(root=str(tmp_path)).store_config() == StoreConfig(kind="local", root=str(tmp_path.resolve()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalDaskCluster(tmp_path_factory.mktemp("dask"), workers=2) as c:
        yield c


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_features_on_two_workers_equal_in_process_and_each_worker_loads_once(cluster):
    from distributed import Client

    x = patches(48)
    here = backbone_features(x, VGG_BLOCK3, batch_size=8, shard_size=8, address="")
    there = backbone_features(x, VGG_BLOCK3, batch_size=8, shard_size=8, address=cluster.address)
    assert there.shape == here.shape == (48, 512)
    assert np.abs(there - here).max() <= TOL * max(1.0, float(np.abs(here).max()))
    with Client(cluster.address, set_as_default=False) as client:
        loads = client.run(engine.worker_loads)
    # six shards over two workers: every worker that worked built the extractor exactly once
    assert sorted(v.get("backbone", 0) for v in loads.values()) == [1, 1], loads
    again = backbone_features(x[:16], VGG_BLOCK3, batch_size=8, shard_size=8, address=cluster.address)
    assert np.abs(again - here[:16]).max() <= TOL * max(1.0, float(np.abs(here).max()))
    with Client(cluster.address, set_as_default=False) as client:
        assert all(v.get("backbone") == 1 for v in client.run(engine.worker_loads).values())


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_pool_scores_on_dask_equal_in_process(cluster, tmp_path):
    store = LocalObjectStore(tmp_path / "artifacts")
    registry = ModelRegistry(store)
    card = register_tiny_model(registry, train=False)
    rng = np.random.default_rng(1)
    keys = []
    for i in range(20):
        key = f"images/pool-{i:02d}.png"
        store.write_bytes(key, encode_png(rng.integers(0, 256, (48 + i, 40), dtype=np.uint8)))
        keys.append(key)
    pool = pd.DataFrame({"stored_key": keys})
    scorer = load_registered(registry, card.version)
    here = score_pool(scorer, pool, store, address="")
    config = StoreConfig(kind="local", root=str(tmp_path / "artifacts"))
    there = score_pool(scorer, pool, store, store_config=config, address=cluster.address)
    assert there.shape == here.shape == (20, 2)
    assert np.abs(there - here).max() <= TOL
    with pytest.raises(ValueError, match="Dask workers can open"):
        score_pool(scorer, pool, store, address=cluster.address)


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_score_batch_on_the_cluster_gives_the_in_process_table(cluster, tmp_path, monkeypatch):
    from defect_assets.cli import main
    from defect_assets.pipeline.batch_scoring import score_batch
    from defect_assets.storage.formats import ArrayTable, write_value
    from defect_assets.storage.layout import asset_value_prefix

    store = LocalObjectStore(tmp_path / "data" / "artifacts")
    card = register_tiny_model(ModelRegistry(store), train=False)
    rng = np.random.default_rng(4)
    rows = []
    for i in range(12):
        key = f"images/b1-{i:02d}.png"
        store.write_bytes(key, encode_png(rng.integers(0, 256, (40, 44), dtype=np.uint8)))
        rows.append({"path": f"img{i:02d}.png", "role": "image", "sha256": f"{i:064x}", "stored_key": key,
                     "width": 44, "height": 40})
    rows.append({"path": "labels.csv", "role": "labels", "sha256": "0" * 64, "stored_key": "x", "width": 0,
                 "height": 0})
    write_value(store, asset_value_prefix(["raw_images"], "b1"), ArrayTable(pd.DataFrame(rows)))
    here = score_batch(store, "b1", card.version, address="")
    assert len(here) == 12 and list(here.columns) == ["image", "image_id", "model_version", "p_ok", "p_defect"]
    for name in ("DEFECT_ASSETS_DATA_DIR", "DAGSTER_HOME", "DEFECT_ASSETS_STORAGE"):
        monkeypatch.setenv(name, "local" if name == "DEFECT_ASSETS_STORAGE" else str(tmp_path))
    monkeypatch.setenv(engine.DASK_ADDRESS_ENV, cluster.address)
    out = tmp_path / "scores.csv"
    assert main(["--data-dir", str(tmp_path / "data"), "score-batch", "b1", "--version", card.version,
                 "--out", str(out)]) == 0
    there = pd.read_csv(out)
    assert there["image"].tolist() == here["image"].tolist()
    assert np.abs(there[["p_ok", "p_defect"]].to_numpy() - here[["p_ok", "p_defect"]].to_numpy()).max() <= TOL


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_the_backbone_features_asset_runs_on_the_cluster_named_in_the_environment(cluster, tmp_path, monkeypatch):
    import dagster as dg

    from defect_assets.defs.models.assets import backbone_features as backbone_features_asset
    from defect_assets.defs.partitions import BATCHES, batch_partitions
    from defect_assets.defs.resources import default_resources
    from defect_assets.pipeline.patching import patches_of
    from defect_assets.pipeline.tiny import synthetic_patch_set
    from defect_assets.storage.formats import read_value, write_value
    from defect_assets.storage.layout import asset_value_prefix

    store = LocalObjectStore(tmp_path / "data" / "artifacts")
    patch_set = synthetic_patch_set(n_scenes=7, size=32, seed=2)
    write_value(store, asset_value_prefix(["labeled_patches"], "d1"), patch_set)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["d1"])
    monkeypatch.setenv(engine.DASK_ADDRESS_ENV, cluster.address)
    result = dg.materialize([dg.AssetSpec("labeled_patches", partitions_def=batch_partitions), backbone_features_asset],
                            partition_key="d1", instance=instance, resources=default_resources(tmp_path / "data"),
                            run_config={"ops": {"backbone_features": {"config": {"backbone": "vgg16", "blocks": [3]}}}})
    assert result.success
    (mat,) = result.asset_materializations_for_node("backbone_features")
    assert mat.metadata["engine"].value == f"dask {cluster.address}"
    feats = read_value(store, asset_value_prefix(["backbone_features"], "d1")).arrays["features"]
    here = backbone_features(np.asarray(patches_of(patch_set)), VGG_BLOCK3, address="")
    assert feats.shape == here.shape == (len(patch_set.table), 512)
    assert np.abs(np.asarray(feats) - here).max() <= TOL * max(1.0, float(np.abs(here).max()))


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_a_worker_killed_mid_shard_loses_and_doubles_nothing(cluster):
    """Last in this module: it leaves the shared cluster with one worker."""
    from distributed import Client

    x = patches(64, seed=3)
    config = engine.backbone_config((32, 32, 1), VGG_BLOCK3, 8)
    here = backbone_features(x, VGG_BLOCK3, batch_size=8, shard_size=8, address="")
    pids = cluster.worker_pids()
    victim = {}

    def kill_one_mid_shard():
        with Client(cluster.address, set_as_default=False) as client:
            deadline = time.monotonic() + READY_SECONDS
            while time.monotonic() < deadline:
                busy = [w for w, tasks in client.processing().items() if tasks]
                done = sum(len(ts) for ts in client.has_what().values())
                if len(busy) == 2 and done >= 2:  # both warm, each in the middle of a slow shard
                    time.sleep(0.2)
                    victim["address"] = busy[1]
                    os.kill(pids[busy[1]], signal.SIGKILL)
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_one_mid_shard)
    killer.start()
    got = []
    out = engine.map_shards(slow_backbone_task, config, lambda s: np.ascontiguousarray(x[s.lo:s.hi]), len(x),
                            empty=np.zeros((0, 512), np.float32), shard_size=8, job="kill",
                            address=cluster.address, progress=lambda i, n: got.append(i))
    killer.join()
    assert victim, "no worker was killed: " + cluster.logs()
    with Client(cluster.address, set_as_default=False) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
    assert out.shape == (64, 512)
    assert np.abs(out - here).max() <= TOL * max(1.0, float(np.abs(here).max()))
    assert got[-1] == 64  # progress counted every row once
