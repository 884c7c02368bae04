"""`defect-assets upload`: any folder becomes a landing-zone batch, manifest last."""

import json
import subprocess
import sys

from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import list_batches
from defect_assets_tests.waits import SUBPROCESS_SECONDS


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "defect_assets.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)


def test_upload_folder_then_refuse_then_overwrite(tmp_path, surface_folder):
    landing = tmp_path / "landing"
    out = cli("upload", str(surface_folder), "--batch", "line-7", "--landing", str(landing), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "batch line-7: 8 files" in out.stdout  # 6 images + points.csv + SYNTHETIC.txt
    manifest = json.loads((landing / "line-7" / "_manifest.json").read_text())
    assert manifest["batch"] == "line-7" and len(manifest["files"]) == 8
    for f in manifest["files"]:
        assert (landing / "line-7" / f["path"]).stat().st_size == f["bytes"]
    etag = list_batches(LocalObjectStore(landing))["line-7"]

    again = cli("upload", str(surface_folder), "--batch", "line-7", "--landing", str(landing), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr

    (surface_folder / "extra.png").write_bytes((surface_folder / "synthetic_surface_0000.png").read_bytes())
    over = cli("upload", str(surface_folder), "--batch", "line-7", "--landing", str(landing), "--overwrite",
               cwd=tmp_path)
    assert over.returncode == 0
    assert list_batches(LocalObjectStore(landing))["line-7"] != etag


def test_bad_batch_id_and_missing_folder(tmp_path):
    out = cli("upload", str(tmp_path), "--batch", "../evil", "--landing", str(tmp_path / "l"), cwd=tmp_path)
    assert out.returncode == 2 and "invalid batch id" in out.stderr
    out = cli("upload", str(tmp_path / "nope"), "--landing", str(tmp_path / "l"), cwd=tmp_path)
    assert out.returncode == 2 and "is not a folder" in out.stderr


def test_half_uploaded_batch_is_invisible(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.write_bytes("partial/a.png", b"...")
    assert list_batches(store) == {}


def _hostile_folder(tmp_path):
    """A folder with one good image and every kind of entry that is not a regular file inside it."""
    import os
    import socket

    outside = tmp_path / "outside.txt"
    outside.write_text("secret from outside the folder\n")
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.png").write_bytes(b"\x89PNG not really")
    os.symlink("/etc/hostname", folder / "abs-link.png")
    os.symlink("../outside.txt", folder / "labels.csv")  # relative, pointing out of the folder
    os.symlink("nowhere.png", folder / "dangling.png")
    os.symlink("loop-b.png", folder / "loop-a.png")
    os.symlink("loop-a.png", folder / "loop-b.png")
    os.symlink(str(tmp_path), folder / "sub" / "dir-link")
    os.mkfifo(folder / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.png"))
    return folder, sock


def test_upload_refuses_symlinks_fifos_and_sockets_and_writes_nothing(tmp_path):
    folder, sock = _hostile_folder(tmp_path)
    landing = tmp_path / "landing"
    try:
        out = cli("upload", str(folder), "--batch", "hostile", "--landing", str(landing), cwd=tmp_path)
    finally:
        sock.close()
    assert out.returncode == 2, out.stdout
    assert "Traceback" not in out.stderr
    lines = [ln.strip() for ln in out.stderr.splitlines()]
    for name, kind in [("abs-link.png", "a symbolic link"), ("labels.csv", "a symbolic link"),
                       ("dangling.png", "a symbolic link"), ("loop-a.png", "a symbolic link"),
                       ("loop-b.png", "a symbolic link"), ("sub/dir-link", "a symbolic link"),
                       ("pipe.png", "a FIFO (named pipe)"), ("sock.png", "a socket")]:
        assert f"{name}: {kind}, not uploaded" in lines, out.stderr
    assert "8 entries that are not regular files" in out.stderr
    assert not (landing / "hostile").exists() or not any((landing / "hostile").rglob("*"))
    assert list_batches(LocalObjectStore(landing)) == {}


def test_failed_upload_removes_what_it_staged(tmp_path):
    import pytest

    from defect_assets.storage.batches import BatchError, upload_files

    store = LocalObjectStore(tmp_path / "landing")

    def unreadable():
        raise BatchError("b.png: cannot be read as a regular file (Too many levels of symbolic links)")

    with pytest.raises(BatchError, match="b.png"):
        upload_files(store, "half", [("a.png", b"first"), ("b.png", unreadable), ("c.png", b"third")])
    assert store.list("") == []


def test_local_store_never_follows_a_link_planted_in_the_landing_zone(tmp_path):
    """A symlinked labels.csv (or folder) put into a landing folder by hand is not an object: not
    listed, not read, and ingestion reports it missing instead of copying the outside file."""
    import os

    import pytest

    from defect_assets.pipeline.ingest import ingest_batch
    from defect_assets.storage.base import StoreKeyError
    from defect_assets.storage.batches import Manifest

    secret = tmp_path / "secret.txt"
    secret.write_text("image,label\nfirst line of a file outside the landing zone,1\n")
    landing = LocalObjectStore(tmp_path / "landing")
    landing.write_bytes("b/real.csv", b"image,label\n")
    os.symlink(str(secret), tmp_path / "landing" / "b" / "labels.csv")
    os.symlink(str(tmp_path), tmp_path / "landing" / "b" / "outside")
    os.mkfifo(tmp_path / "landing" / "b" / "pipe.csv")
    files = [{"path": "labels.csv", "bytes": secret.stat().st_size, "sha256": ""},
             {"path": "outside/secret.txt", "bytes": 1, "sha256": ""},
             {"path": "pipe.csv", "bytes": 0, "sha256": ""}]
    landing.write_bytes("b/_manifest.json", Manifest(batch="b", files=files, created="now").to_json())

    assert [o.key for o in landing.list("b/")] == ["b/_manifest.json", "b/real.csv"]
    for key in ("b/labels.csv", "b/outside/secret.txt", "b/pipe.csv"):
        assert landing.info(key) is None and not landing.exists(key)
        with pytest.raises(StoreKeyError):
            landing.read_bytes(key)
        with pytest.raises(StoreKeyError):
            landing.open_read(key)
    artifacts = LocalObjectStore(tmp_path / "artifacts")
    inventory = ingest_batch(landing, artifacts, "b")
    assert list(inventory["role"]) == ["rejected"] * 3
    assert artifacts.list("") == []


def test_upload_then_build_with_no_daemon_materializes_the_batch(tmp_path, surface_folder):
    """`upload` then `build` on a fresh DAGSTER_HOME, no daemon: the batch's partition is registered and
    every asset of prepare_batch_job is materialized for it, tagged with the manifest's etag like a sensor run."""
    import os

    import dagster as dg

    from defect_assets.defs.jobs import prepare_batch_job
    from defect_assets.defs.landing.sensors import ETAG_TAG

    data, home = tmp_path / "data", tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_DATA_DIR": str(data)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "defect_assets.cli", *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)
    up = run("upload", str(surface_folder), "--batch", "line-9")
    assert up.returncode == 0, up.stderr
    assert "defect-assets build line-9" in up.stdout
    assert not home.exists() or not list(home.rglob("*.db"))  # upload alone touches no Dagster instance

    missing = run("build", "line-8")
    assert missing.returncode == 2 and "no complete batch 'line-8'" in missing.stderr and "line-9" in missing.stderr

    built = run("build", "line-9")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "registered partition 'line-9'" in built.stdout
    assert 'Finished execution of step "raw_images"' in built.stdout  # progress, step by step

    from defect_assets.definitions import build_defs

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("batches") == ["line-9"]
        selected = build_defs().resolve_job_def(prepare_batch_job.name).asset_layer.executable_asset_keys
        assert len(selected) >= 6
        for key in selected:
            assert "line-9" in instance.get_materialized_partitions(key), key.to_user_string()
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "line-9"}))
        etag = list_batches(LocalObjectStore(data / "landing"))["line-9"]
        assert len(runs) == 1 and runs[0].tags[ETAG_TAG] == etag and runs[0].job_name == prepare_batch_job.name
