"""`defect-assets serve` and `defect-assets score` as a person runs them: a real service process
with an API key, the score table and JSON, and the key never in the service's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from defect_assets.ml.images import encode_png
from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline.patching import patches_of
from defect_assets.serving.client import DefectClient
from defect_assets.storage.formats import read_value
from defect_assets_tests.helpers.ports import free_port
from defect_assets_tests.helpers.serving import API_KEY, model_registry
from defect_assets_tests.waits import READY_SECONDS, SUBPROCESS_SECONDS


def cli(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "defect_assets.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)


@pytest.mark.slow
def test_serve_and_score_commands_with_an_api_key(tmp_path):
    store, registry, versions = model_registry(tmp_path / "data")
    registry.promote(versions["a"], threshold=0.4)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data"), "DEFECT_ASSETS_API_KEY": API_KEY,
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    # a dent (a stored defect patch) and the clearest defect-free window, enlarged 3x (the service
    # shrinks it back: area averaging of 3x3 blocks restores the window exactly)
    patches = read_value(store, "labeled_patches/synthetic")
    px, kinds = np.asarray(patches_of(patches)), patches.table["kind"].to_numpy()
    negatives = np.flatnonzero(kinds == "negative")
    clean = negatives[np.argmin(load_registered(registry, versions["a"]).predict_proba(px[negatives])[:, 1])]
    images = [tmp_path / "part-0.png", tmp_path / "part-1.png"]
    images[0].write_bytes(encode_png(px[int(np.flatnonzero(kinds == "point")[0])]))
    images[1].write_bytes(encode_png(np.kron(px[clean], np.ones((3, 3), np.uint8))))
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "defect_assets.cli", "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        client, deadline = DefectClient(url), time.monotonic() + READY_SECONDS
        while not client.ready():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        # what the model says, through the inference seam in this process; 0.4 is the promoted threshold
        want = load_registered(registry, versions["a"]).predict_images([p.read_bytes() for p in images])[:, 1]
        table = cli("score", *map(str, images), "--url", url, env=env, cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:3] == ["image", "decision", "p(defect)"] and len(lines) == 7
        rows = [line.split() for line in lines[2:4]]
        # after a blank line, the legend: the mark of a defect decision, and the columns' meaning
        assert lines[4] == "" and lines[5].startswith("* = a defect") and lines[6].startswith("p(defect): ")
        assert [r[0] for r in rows] == [str(p) for p in images]
        for row, p in zip(rows, want):
            assert row[1:4] == (["defect", "*", f"{p:.4f}"] if p >= 0.4 else ["ok", f"{p:.4f}", versions["a"]]), row
            assert versions["a"] in row
        as_json = cli("score", *map(str, images), "--url", url, "--json", env=env, cwd=tmp_path)
        results = json.loads(as_json.stdout)
        assert [r["filename"] for r in results] == ["part-0.png", "part-1.png"]
        assert {r["model_version"] for r in results} == {versions["a"]}
        np.testing.assert_allclose([r["probabilities"]["defect"] for r in results], want, atol=1e-5)
        assert [r["decision"] for r in results] == ["defect", "ok"]  # the dent, and the plain surface

        anonymous = {k: v for k, v in env.items() if k != "DEFECT_ASSETS_API_KEY"}
        denied = cli("score", str(images[0]), "--url", url, env=anonymous, cwd=tmp_path)
        assert denied.returncode == 2 and "401 unauthorized" in denied.stderr
        wrong = cli("score", str(images[0]), "--url", url, env={**env, "DEFECT_ASSETS_API_KEY": API_KEY + "x"},
                    cwd=tmp_path)
        assert wrong.returncode == 2 and "401" in wrong.stderr
        missing = cli("score", str(tmp_path / "nope.png"), "--url", url, env=env, cwd=tmp_path)
        assert missing.returncode == 2 and "nope.png" in missing.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = log_path.read_text()
    assert f"serving model {versions['a']}" in output and '"POST /v1/predict HTTP/1.1" 401' in output
    assert API_KEY not in output

    down = cli("score", str(images[0]), "--url", url, env=env, cwd=tmp_path)
    assert down.returncode == 2 and "defect-assets serve" in down.stderr
