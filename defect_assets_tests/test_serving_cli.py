"""`defect-assets serve` and `defect-assets score` as a person runs them: a real service process
with an API key, the score table and JSON, and the key never in the service's output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from defect_assets.serving.client import DefectClient
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.test_serving import API_KEY, model_registry


def cli(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "defect_assets.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_serve_and_score_commands_with_an_api_key(tmp_path):
    _, registry, versions = model_registry(tmp_path / "data")
    registry.promote(versions["a"], threshold=0.4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data"), "DEFECT_ASSETS_API_KEY": API_KEY,
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    images = []
    for i, (h, w) in enumerate([(32, 32), (120, 90)]):
        images.append(tmp_path / f"part-{i}.png")
        images[-1].write_bytes(png_bytes(smooth_image(h, w, seed=i)))
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "defect_assets.cli", "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        client, deadline = DefectClient(url), time.monotonic() + 60
        while not client.ready():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        table = cli("score", *map(str, images), "--url", url, env=env, cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:3] == ["image", "decision", "p(defect)"] and len(lines) == 4
        assert all(versions["a"] in line for line in lines[2:])
        as_json = cli("score", *map(str, images), "--url", url, "--json", env=env, cwd=tmp_path)
        results = json.loads(as_json.stdout)
        assert [r["filename"] for r in results] == ["part-0.png", "part-1.png"]
        assert {r["model_version"] for r in results} == {versions["a"]}

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
