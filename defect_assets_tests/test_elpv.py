"""The real ELPV data set, read from the installed package, and the CLI's main job on a slice of it."""

import os
import re
import signal
import socket
import subprocess
import sys

import pandas as pd

from defect_assets.datasets.elpv import elpv_labels, seed_elpv
from defect_assets.ml.labels import is_defect_label
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import list_batches, read_manifest


def test_elpv_labels_are_the_published_counts():
    df = elpv_labels()
    assert len(df) == 2624
    counts = df.groupby(["type", "probability"]).size()
    assert counts["mono"].tolist() == [588, 117, 56, 313]
    assert counts["poly"].tolist() == [920, 178, 50, 402]
    assert int((df["probability"] >= 0.5).sum()) == 821


def test_seed_elpv_writes_complete_batches(tmp_path):
    store = LocalObjectStore(tmp_path)
    ids = seed_elpv(store, n_batches=3, limit=30)
    assert ids == ["elpv-01", "elpv-02", "elpv-03"] and set(list_batches(store)) == set(ids)
    m = read_manifest(store, "elpv-02")
    assert len(m.files) == 11 and {f["path"] for f in m.files} >= {"labels.csv"}
    labels = pd.read_csv(tmp_path / "elpv-02" / "labels.csv", dtype=str)
    assert len(labels) == 10 and set(labels["label"]) <= {"0.0000", "0.3333", "0.6667", "1.0000"}
    assert all(is_defect_label(v) == (float(v) >= 0.5) for v in labels["label"])
    etags = list_batches(store)
    assert seed_elpv(store, n_batches=3, limit=30) == ids and list_batches(store) == etags  # idempotent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_main_job_cli_on_a_slice_of_elpv(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data")}
    port = free_port()
    cmd = [sys.executable, "-m", "defect_assets.cli", "demo", "--limit", "40", "--batches", "2", "--quick",
           "--port", str(port)]
    try:
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        pid_file = tmp_path / "data" / "serve.pid"
        if pid_file.exists():  # the demo leaves its scoring service running: stop it
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(rf"http://127.0.0.1:{port} serves \S+ \(smoke test", out.stdout), out.stdout
    assert re.search(r"^cell\d{4}\.png\s+(defect|ok)", out.stdout, re.M), out.stdout
    assert "Total images ingested: 40" in out.stdout
    assert re.search(r"elpv-01\s+20\s+0\s+20\s+\d+", out.stdout), out.stdout
    for family in ("scratch_cnn", "fine_tuned_vgg16", "elastic_net"):
        assert re.search(rf"^\s*{family}\s+{family}-\S+\s+[01]\.\d{{3}}", out.stdout, re.M), out.stdout
    assert "Augmented training images (train split x 48):" in out.stdout
    assert (tmp_path / "home" / "dagster.yaml").exists()
    assert "Test split (" in out.stdout and re.search(r"Champion: \S+ \((scratch_cnn|fine_tuned_vgg16|elastic_net)\)", out.stdout)
    html = re.search(r"HTML report: (\S+\.html)", out.stdout).group(1)
    assert open(html).read().startswith("<!doctype html>")
    again = subprocess.run([*cmd, "--no-serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already materialized") == 2
    assert "Models are up to date" in again.stdout
