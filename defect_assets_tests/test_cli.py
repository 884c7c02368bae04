"""`defect-assets upload`: any folder becomes a landing-zone batch, manifest last."""

import json
import subprocess
import sys

from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import list_batches


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "defect_assets.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


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
