"""The ObjectStore contract on Azure Blob Storage (real Azurite, no mocks), the Azure resource
chosen by environment variables only, the whole asset chain on Blob, and no secret in any log."""

import datetime as dt
import hashlib
import logging
import os
import uuid

import dagster as dg
import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

import defect_assets.storage.azure as azure_store
import defect_assets_tests.helpers.pipeline as pipeline_helpers
from defect_assets.defs.io_manager import ArtifactIOManager
from defect_assets.defs.resources import AzureBlobStorage, LocalStorage, default_resources
from defect_assets.storage import StoreKeyError
from defect_assets.storage.azure import AzureBlobObjectStore
from defect_assets.storage.batches import list_batches, upload_files
from defect_assets.storage.formats import read_value
from defect_assets_tests.azurite import ACCOUNT, ACCOUNT_KEY, REPO
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.waits import run_child

pytest_plugins = ["defect_assets_tests.conftest_azurite"]  # the session-scoped `azurite` fixture


def unique(name: str) -> str:
    """A fresh container name per test (3-63 lowercase letters, digits and dashes)."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(azurite) -> AzureBlobObjectStore:
    container = azurite.service_client().get_container_client(unique("contract"))
    return AzureBlobObjectStore(container, prefix="project/one", create_container=True)


def sas_token(permissions: str = "rwdlac") -> str:
    return generate_account_sas(ACCOUNT, ACCOUNT_KEY, ResourceTypes(service=True, container=True, object=True),
                                AccountSasPermissions.from_string(permissions),
                                expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))


def azure_env(monkeypatch, azurite, credential: str = "key") -> tuple[str, str]:
    """Point default_resources() at Azurite through environment variables only."""
    landing, artifacts = unique("landing"), unique("artifacts")
    monkeypatch.setenv("DEFECT_ASSETS_STORAGE", "azure")
    monkeypatch.setenv("DEFECT_ASSETS_AZURE_ACCOUNT_URL", azurite.account_url)
    monkeypatch.setenv("DEFECT_ASSETS_AZURE_LANDING_CONTAINER", landing)
    monkeypatch.setenv("DEFECT_ASSETS_AZURE_ARTIFACT_CONTAINER", artifacts)
    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN", raising=False)
    if credential == "key":
        monkeypatch.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
    else:
        monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas_token())
    return landing, artifacts


# --- the ObjectStore contract ---------------------------------------------------------------

def test_write_read_list_info_and_etag_change(store):
    first = store.write_bytes("b/c.png", b"\x89PNG first")
    store.write_bytes("b/a.txt", b"a")
    store.write_bytes("bz/x", b"x")
    store.write_bytes("top.json", b"{}")
    assert store.read_bytes("b/c.png") == b"\x89PNG first"
    assert [(o.key, o.size) for o in store.list("b/")] == [("b/a.txt", 1), ("b/c.png", 10)]
    assert [o.key for o in store.list()] == ["b/a.txt", "b/c.png", "bz/x", "top.json"]
    assert list(store.walk_prefixes()) == ["b", "bz", "top.json"]
    assert store.info("b/c.png") == first and first.size == 10 and first.etag

    second = store.write_bytes("b/c.png", b"\x89PNG second, longer")
    assert second.etag != first.etag and second.size == len(b"\x89PNG second, longer") == 19
    assert store.info("b/c.png").etag == second.etag
    assert store.read_bytes("b/c.png") == b"\x89PNG second, longer"
    assert {o.key: o.etag for o in store.list("b/")}["b/c.png"] == second.etag

    # keys live below the prefix inside the container, and nowhere else
    names = sorted(b.name for b in store.container.list_blobs())
    assert names == ["project/one/b/a.txt", "project/one/b/c.png", "project/one/bz/x", "project/one/top.json"]


def test_two_prefixes_in_one_container_do_not_see_each_other(store):
    other = AzureBlobObjectStore(store.container, prefix="project/two")
    store.write_bytes("k", b"one")
    other.write_bytes("k", b"two")
    assert store.read_bytes("k") == b"one" and other.read_bytes("k") == b"two"
    assert [o.key for o in other.list()] == ["k"]
    other.delete("k")
    assert store.read_bytes("k") == b"one" and other.info("k") is None


def test_write_new_on_blob_storage_has_exactly_one_winner_and_label_events_lose_nothing(store):
    """Create-if-absent is the service's conditional Put Blob: racing writers of one new key
    leave one blob; two labelers appending at once through two clients keep every label once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from defect_assets.storage.labeling import LabelEvent, LabelLog

    barrier = threading.Barrier(6)

    def race(i):
        barrier.wait()
        return store.write_new("race/k", f"writer {i}".encode())

    with ThreadPoolExecutor(6) as pool:
        won = list(pool.map(race, range(6)))
    assert won.count(True) == 1 and store.read_bytes("race/k") == f"writer {won.index(True)}".encode()

    def label(who, i):
        return LabelEvent(kind="label", queue="q", item=f"i{i}", batch="b", image=f"{i}.png", image_id="0" * 64,
                          labeler=who, model_version="m", label="defect" if i % 2 else "ok")

    other = AzureBlobObjectStore(store.container, prefix="project/one")  # a second client, same place
    logs = {"ana": LabelLog(store), "ben": LabelLog(other)}
    work = [(who, i) for i in range(8) for who in logs] * 2  # every label submitted twice

    def submit(chunk):
        for who, i in chunk:
            logs[who].append(label(who, i))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(submit, [work[k::4] for k in range(4)]))
    labels = LabelLog(store).labels()
    assert len(labels) == 16 and not labels.duplicated(["labeler", "item"]).any()


def test_two_different_labels_at_once_on_blob_storage_store_exactly_one(store):
    """The "undo first" rule on Blob: 16 posts of two labels by one labeler for one item, through two
    clients (two replicas), race for one key with If-None-Match: *; one is stored, all see it."""
    from defect_assets.storage.labeling import LabelLog
    from defect_assets_tests.helpers.label_store import race_two_labels_on_one_item

    other = AzureBlobObjectStore(store.container, prefix="project/one")
    results = race_two_labels_on_one_item(store, other)
    assert sum(created for _, created in results) == 1
    assert len({stored.id for stored, _ in results}) == 1
    assert len(LabelLog(store).labels()) == 1 and len(LabelLog(other).keys()) == 1


def test_failed_write_leaves_the_old_blob_and_creates_nothing_new(store):
    old = store.write_bytes("table.parquet", b"old complete content")
    with pytest.raises(RuntimeError, match="disk full"):
        with store.open_write("table.parquet") as f:
            f.write(b"half of the new ")
            raise RuntimeError("disk full")
    assert store.read_bytes("table.parquet") == b"old complete content"
    assert store.info("table.parquet") == old
    with pytest.raises(ValueError):
        with store.open_write("never.npy") as f:
            f.write(b"partial")
            raise ValueError("crash")
    assert store.info("never.npy") is None
    assert [o.key for o in store.list()] == ["table.parquet"]


def test_large_write_spills_to_disk_and_uploads_in_blocks(azurite, monkeypatch):
    monkeypatch.setattr(azure_store, "SPOOL_BYTES", 4096)  # spill to a temporary file early
    service = BlobServiceClient(azurite.account_url, credential=ACCOUNT_KEY,
                                max_single_put_size=64 * 1024, max_block_size=16 * 1024)
    big = AzureBlobObjectStore(service.get_container_client(unique("blocks")), create_container=True)
    data = os.urandom(300_000)  # 19 staged blocks, committed by one Put Block List
    with big.open_write("arrays/image.npy") as f:
        for i in range(0, len(data), 10_000):
            f.write(data[i:i + 10_000])
    assert big.info("arrays/image.npy").size == 300_000
    assert hashlib.sha256(big.read_bytes("arrays/image.npy")).digest() == hashlib.sha256(data).digest()
    blocks = big.container.get_blob_client("arrays/image.npy").get_block_list("all")
    assert len(blocks[0]) == 19 and blocks[1] == []  # all committed, none left uncommitted


def test_missing_and_invalid_keys(store):
    with pytest.raises(StoreKeyError, match="no object 'nope/x.png' in http://127.0.0.1:"):
        store.read_bytes("nope/x.png")
    assert store.info("nope/x.png") is None and not store.exists("nope/x.png")
    store.delete("nope/x.png")  # already gone: no error
    for bad in ("../escape", "/abs", "a/../../b", "..", "a\\b", ""):
        with pytest.raises(StoreKeyError):
            store.write_bytes(bad, b"x")
    store.write_bytes("gone", b"1")
    store.delete("gone")
    assert store.info("gone") is None and store.list() == []


def test_container_is_created_only_when_configured(azurite):
    service = azurite.service_client()
    name = unique("absent")
    AzureBlobObjectStore(service.get_container_client(name), create_container=False)
    assert not service.get_container_client(name).exists()
    created = AzureBlobObjectStore(service.get_container_client(name), create_container=True)
    assert service.get_container_client(name).exists()
    created.write_bytes("k", b"v")
    assert AzureBlobObjectStore(service.get_container_client(name), create_container=True).read_bytes("k") == b"v"


def test_url_and_reprs_carry_no_secret(azurite, monkeypatch):
    token = sas_token()
    signature = dict(p.split("=", 1) for p in token.split("&"))["sig"]
    sas_store = AzureBlobObjectStore(
        BlobServiceClient(azurite.account_url, credential=token).get_container_client(unique("sas")),
        prefix="p", create_container=True)
    sas_store.write_bytes("k", b"through a SAS token")
    assert sas_store.container.url.count("sig=") == 1  # the SDK client does carry it ...
    assert sas_store.url == f"{azurite.account_url}/{sas_store.container.container_name}/p"  # ... our url never
    assert "sig=" not in repr(sas_store)

    azure_env(monkeypatch, azurite, "key")
    res = default_resources()
    assert isinstance(res["landing_zone"], AzureBlobStorage) and isinstance(res["artifact_store"], AzureBlobStorage)
    assert res["landing_zone"].account_url == azurite.account_url
    with dg.build_resources(res) as initialized:  # EnvVars resolved: the secret is in memory now
        assert initialized.landing_zone.credential.key == ACCOUNT_KEY
        for text in (repr(initialized.landing_zone), str(initialized.landing_zone), repr(initialized.io_manager),
                     initialized.landing_zone.open().url, repr(initialized.artifact_store.open())):
            assert ACCOUNT_KEY not in text and ACCOUNT_KEY[:20] not in text
        assert initialized.landing_zone.open().url == (f"{azurite.account_url}/"
                                                       f"{os.environ['DEFECT_ASSETS_AZURE_LANDING_CONTAINER']}")

    monkeypatch.setenv("DEFECT_ASSETS_AZURE_ACCOUNT_URL", f"{azurite.account_url}?{token}")
    with pytest.raises(ValueError, match="must not carry a query string") as err:
        default_resources()
    assert signature not in str(err.value)


def test_local_stays_the_default(monkeypatch, tmp_path):
    for var in ("DEFECT_ASSETS_STORAGE", "DEFECT_ASSETS_AZURE_ACCOUNT_URL", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DEFECT_ASSETS_DATA_DIR", str(tmp_path / "d"))
    res = default_resources()
    assert isinstance(res["landing_zone"], LocalStorage) and isinstance(res["io_manager"], ArtifactIOManager)
    assert res["landing_zone"].root == str(tmp_path / "d" / "landing")
    monkeypatch.setenv("DEFECT_ASSETS_STORAGE", "azure")
    monkeypatch.delenv("DEFECT_ASSETS_AZURE_ACCOUNT_URL", raising=False)
    with pytest.raises(ValueError, match="DEFECT_ASSETS_AZURE_ACCOUNT_URL"):
        default_resources()
    assert isinstance(default_resources(tmp_path / "x")["artifact_store"], LocalStorage)  # explicit folder: local
    monkeypatch.setenv("DEFECT_ASSETS_STORAGE", "s3")
    with pytest.raises(ValueError, match="use 'local' or 'azure'"):
        default_resources()


# --- the asset chain on Blob ----------------------------------------------------------------

@pytest.fixture
def blob_env(azurite, monkeypatch, tmp_path):
    """test_pipeline's env tuple, but landing zone and artifact store are Azurite containers."""
    monkeypatch.chdir(tmp_path)  # a stray local default would show up as ./data
    azure_env(monkeypatch, azurite, "key")
    resources = default_resources()
    return (dg.DagsterInstance.ephemeral(), resources, resources["landing_zone"].open(),
            resources["artifact_store"].open())


def test_whole_chain_on_azurite(blob_env, surface_folder, tmp_path):
    """test_pipeline's first test (helpers.pipeline), unchanged, on Blob; then what landed where in the containers."""
    pipeline_helpers.whole_chain_on_a_generated_point_batch(blob_env, surface_folder)
    _, _, landing, artifacts = blob_env
    landing_names = {b.name for b in landing.container.list_blobs()}
    assert "b1/_manifest.json" in landing_names and "b1/points.csv" in landing_names
    stored = [b.name for b in artifacts.container.list_blobs()]
    assert sum(n.startswith("images/") for n in stored) == 6  # the 6 readable images, content-addressed
    assert {n.split("/")[0] for n in stored} >= {"raw_images", "image_labels", "labeled_patches",
                                                 "augmented_training_set"}
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_the_code_location_runs_on_azurite_by_environment_variables_only(azurite, monkeypatch, tmp_path):
    """`dagster asset materialize` on the real code location in a fresh process: nothing but
    environment variables say 'Azure'."""
    landing, artifacts = azure_env(monkeypatch, azurite, "key")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    files = [(f"img{i}.png", png_bytes(smooth_image(56, 56, seed=40 + i))) for i in range(6)]
    labels = b"image,label\n" + b"".join(b"img%d.png,%s\n" % (i, b"crack" if i % 2 else b"ok") for i in range(6))
    service = azurite.service_client()
    upload_files(AzureBlobObjectStore(service.get_container_client(landing), create_container=True), "env-only",
                 files + [("labels.csv", labels)])
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("batches", ["env-only"])

    proc = run_child(
        [str(REPO / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m", "defect_assets.definitions",
         "--select", "raw_images,image_labels,labeled_patches,augmented_training_set", "--partition", "env-only"],
        cwd=tmp_path, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr
    assert ACCOUNT_KEY not in proc.stdout + proc.stderr
    store = AzureBlobObjectStore(service.get_container_client(artifacts))
    inv = read_value(store, "raw_images/env-only").table
    assert sorted(inv.loc[inv["role"] == "image", "path"]) == [name for name, _ in files]
    patches = read_value(store, "labeled_patches/env-only").table
    assert sorted(patches["label"].value_counts().items()) == [("crack", 3), ("ok", 3)]
    n_train = int((patches["split"] == "train").sum())
    assert len(read_value(store, "augmented_training_set/env-only")) == 48 * n_train
    assert not (tmp_path / "data").exists()


# --- secrets never reach a log --------------------------------------------------------------

@pytest.mark.parametrize("credential", ["key", "sas"])
def test_debug_logs_of_a_full_chain_carry_no_secret(credential, azurite, monkeypatch, tmp_path, caplog, capfd):
    azure_env(monkeypatch, azurite, credential)
    secret = ACCOUNT_KEY if credential == "key" else os.environ["AZURE_STORAGE_SAS_TOKEN"]
    signature = ACCOUNT_KEY if credential == "key" else dict(
        p.split("=", 1) for p in secret.split("&"))["sig"]
    caplog.set_level(logging.DEBUG)  # every Python logger, azure-core's HTTP logging included
    resources = default_resources()
    instance = dg.DagsterInstance.ephemeral()
    landing = resources["landing_zone"].open()
    upload_files(landing, "dbg", [(f"i{i}.png", png_bytes(smooth_image(48, 48, seed=i))) for i in range(4)]
                 + [("labels.csv", b"image,label\n" + b"".join(b"i%d.png,%d\n" % (i, i % 2) for i in range(4)))])
    assert list(list_batches(landing)) == ["dbg"]
    instance.add_dynamic_partitions("batches", ["dbg"])
    result = dg.materialize(pipeline_helpers.ASSETS, partition_key="dbg", instance=instance, resources=resources,
                            run_config={"loggers": {"console": {"config": {"log_level": "DEBUG"}}}})
    assert result.success
    assert len(read_value(resources["artifact_store"].open(), "labeled_patches/dbg")) == 4

    out, err = capfd.readouterr()
    lines = [r.getMessage() for r in caplog.records] + out.splitlines() + err.splitlines()
    lines += [str(e.message) + str(e.dagster_event and e.dagster_event.event_specific_data)
              for e in instance.all_logs(result.run_id)]
    assert sum("127.0.0.1" in line for line in lines) > 20  # the HTTP traffic really was logged
    text = "\n".join(lines)
    assert signature not in text and secret not in text
    assert "Bearer " not in text and "bearer " not in text
    assert "sig=" not in text
    if credential == "sas":  # the SAS-signed request lines were logged, with the signature rewritten
        assert sum("sig:redacted" in line for line in lines) > 20


@pytest.mark.services  # Azurite in node_modules (./run test installs it; --quick needs none)
def test_azurite_is_installed_by_the_project():
    """CI must never skip the Blob tests: package.json pins Azurite and ./run test installs it."""
    import json

    assert json.loads((REPO / "package.json").read_text())["devDependencies"]["azurite"] == "3.37.0"
    assert os.access(REPO / "node_modules" / ".bin" / "azurite-blob", os.X_OK)
