"""`defect-assets demo --dataset synthetic --quick`: the dent workflow end to end through the real
CLI: its champion deployed behind the scoring service, two patches scored with the client, and a
large SYNTHETIC photo inspected through /v1/inspect, the dents located and the heatmap saved."""

import json
import math
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defect_assets.demo_photo import PHOTO_DEFECTS, PHOTO_HEIGHT, PHOTO_SEED, PHOTO_WIDTH
from defect_assets.ml.synthetic import make_surface_scene
from defect_assets.serving.client import DefectClient
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.helpers.demo import check_closing_hints
from defect_assets_tests.helpers.ports import free_port
from defect_assets_tests.waits import run_child

LOCATED = re.compile(r"^ +x +(\d+) +y +(\d+) +score (\d\.\d+).*<- (dent|scratch) drawn at \((\d+), (\d+)\), "
                     r"(\d+) px away$", re.M)


@pytest.mark.slow
@pytest.mark.services
def test_the_synthetic_main_job_deploys_its_champion_and_locates_the_dents_of_a_large_photo(tmp_path):
    home, data = tmp_path / "home", tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_DATA_DIR": str(data)}
    for name in ("DEFECT_ASSETS_STORAGE", "DEFECT_ASSETS_DAGSTER_UI_URL", "DEFECT_ASSETS_API_KEY"):
        env.pop(name, None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        out = run_child([sys.executable, "-m", "defect_assets.cli", "demo", "--dataset", "synthetic", "--quick",
                         "--port", str(port)], cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        # while the service the demo left runs: what it serves and where its pages' nav bar points
        served = DefectClient(url).model()
        with urllib.request.urlopen(f"{url}/v1/nav", timeout=30) as r:
            nav = json.load(r)
    finally:
        pid_file = data / "serve.pid"
        if pid_file.exists():  # the demo leaves its scoring service running: stop it
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
    text = out.stdout

    # small: two batches of 24 photos
    assert text.count("seeded batch synthetic-surfaces-") == 2, text[:2000]
    # the champion is in production and the service answers with it
    champion = re.search(r"^Champion: (\S+) \((\S+)\), why: .+\. Checks: all passed$", text, re.M)
    assert champion, text[-4000:]
    production = ModelRegistry(LocalObjectStore(data / "artifacts")).production()
    assert served["model_version"] == production["version"] == champion.group(1)
    assert f"{url} serves {champion.group(1)}" in text
    assert re.search(rf"^Example: \S+ score .+ --url {re.escape(url)}$", text, re.M)

    # the hints: absolute paths that exist, this run's instance and data folder, the real ports
    ui = check_closing_hints(text, home, data)
    assert nav["dagster_ui_url"] == ui
    assert text.strip().splitlines()[-1] == f"Dashboard (model quality, champions, batches, monitoring, mistakes): " \
                                            f"{url}/dashboard"

    # the located defects: every one printed is a drawn one (the photo is regenerated here), at least one a dent
    _, drawn = make_surface_scene(np.random.default_rng(PHOTO_SEED), width=PHOTO_WIDTH, height=PHOTO_HEIGHT,
                                  defects=PHOTO_DEFECTS)
    located = LOCATED.findall(text)
    assert any(kind == "dent" for *_, kind, _, _, _ in located), text[-3000:]
    for x, y, score, kind, dx, dy, away in located:
        assert any((d.kind, d.x, d.y) == (kind, int(dx), int(dy)) for d in drawn)
        assert math.hypot(int(x) - int(dx), int(y) - int(dy)) == pytest.approx(int(away), abs=1)
        assert int(away) <= 32  # within half a window: the window centered there covers the drawn center
        assert float(score) >= production["threshold"] - 5e-4

    # the heatmap: a PNG of the photo's size under the data folder, bright at a located dent, dark on plain surface
    heatmap = Path(re.search(r"^    heatmap \(.*\): (\S+)$", text, re.M).group(1))
    assert heatmap.is_absolute() and heatmap.parent == (data / "inspection").resolve()
    with Image.open(heatmap) as im:
        assert im.format == "PNG" and im.size == (PHOTO_WIDTH, PHOTO_HEIGHT)
        gray = np.asarray(im.convert("L"))
    x, y, score = next((int(x), int(y), float(s)) for x, y, s, kind, *_ in located if kind == "dent")
    plain = re.search(r"plain_surface_at_(\d+)_(\d+)\.png", text)
    assert gray[y, x] > gray[int(plain.group(2)), int(plain.group(1))]
    if champion.group(2) != "anomaly":  # windows' scores, not an anomaly map: the located window's own score
        assert abs(int(gray[y, x]) - 255 * score) <= 3
