"""The Dagster UI (dagster-webserver on 127.0.0.1) loads the code location and shows every
asset with its lineage, asked through the UI's own GraphQL endpoint."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_shows_every_asset_with_lineage(tmp_path):
    from defect_assets.definitions import defs

    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    web = [str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"),
           "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(web, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        nodes, deadline = None, time.time() + 120
        while time.time() < deadline:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                             data=json.dumps({"query": QUERY}).encode(),
                                             headers={"Content-Type": "application/json"})
                doc = json.load(urllib.request.urlopen(req, timeout=5))
                nodes = doc.get("data", {}).get("assetNodes")
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, "the webserver did not serve the asset graph within 120 s"
        shown = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        graph = defs.resolve_asset_graph()
        expected = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
                    for k in graph.get_all_asset_keys()}
        assert shown == expected
        assert shown["labeled_patches"] == {"raw_images", "image_labels"}
        assert shown["champion_model"] >= {"scratch_cnn_evaluation", "fine_tuned_vgg16_evaluation",
                                           "elastic_net_evaluation"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
