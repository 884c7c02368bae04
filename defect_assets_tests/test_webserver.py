"""The Dagster UI (dagster-webserver on 127.0.0.1): it loads the code location and shows every
asset with its lineage (asked through the UI's own GraphQL endpoint), and, driven in a real
browser as a person would, it finds prediction_monitoring in the asset graph, launches one
partition's materialization with a run config typed into its config editor, shows the run
succeed and then the asset's metadata with its plots."""

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from defect_assets_tests.helpers.ports import free_port
from defect_assets_tests.waits import READY_SECONDS

REPO = Path(__file__).resolve().parents[1]
QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"
# runs launched from the UI start at once (no daemon needed to dequeue them), as under `dagster dev`
INSTANCE_YAML = ("telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster.core.run_coordinator\n"
                 "  class: DefaultRunCoordinator\n")


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=5))


@contextlib.contextmanager
def webserver(home: Path, data_dir: Path):
    """dagster-webserver on a free port of 127.0.0.1, on the instance in ``home``; yields
    (port, asset nodes) once it serves the asset graph."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_DATA_DIR": str(data_dir)}
    env.pop("DEFECT_ASSETS_STORAGE", None)
    web = [str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"),
           "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(web, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        nodes, deadline = None, time.time() + READY_SECONDS
        while time.time() < deadline:
            try:
                nodes = graphql(port, QUERY).get("data", {}).get("assetNodes")
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, "the webserver did not serve the asset graph within 180 s"
        yield port, nodes
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.services
@pytest.mark.slow
def test_ui_shows_every_asset_with_lineage(tmp_path):
    from defect_assets.definitions import build_defs

    defs = build_defs()

    with webserver(tmp_path / "home", tmp_path / "data") as (_, nodes):
        shown = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
    graph = defs.resolve_asset_graph()
    expected = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
                for k in graph.get_all_asset_keys()}
    assert shown == expected
    assert shown["labeled_patches"] == {"raw_images", "image_labels"}
    assert shown["champion_model"] >= {"scratch_cnn_evaluation", "fine_tuned_vgg16_evaluation",
                                       "elastic_net_evaluation"}
    assert shown["prediction_monitoring"] == {"champion_test_predictions"}


DAY = "2026-11-20"
# the value shown in the metadata table's row whose key cell is exactly ``key``
METADATA = """(key) => {
  const row = Array.from(document.querySelectorAll('tr'))
    .find(tr => tr.cells.length === 3 && tr.cells[0].innerText.trim() === key);
  return row ? row.cells[2].innerText.trim() : null;
}"""


@pytest.mark.services
@pytest.mark.slow
def test_a_person_materializes_an_asset_from_the_ui(tmp_path, offline_page, monkeypatch):
    import dagster as dg

    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.layout import MONITORING_PARQUET
    from defect_assets_tests.helpers.monitoring import VERSION, write_day, write_reference

    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    store = LocalObjectStore(data / "artifacts")
    write_reference(store)  # the model's test-split scores, as champion_test_predictions leaves them ...
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:  # ... and recorded as its materialization
        instance.report_runless_asset_event(dg.AssetMaterialization("champion_test_predictions"))
    scores = np.clip(np.random.default_rng(4).beta(2, 5, 300) + 0.2, 0, 1)  # a day of shifted production scores
    write_day(store, DAY, scores)

    with webserver(home, data) as (port, _):
        ui = f"http://127.0.0.1:{port}"
        page = offline_page.page
        page.set_default_timeout(60_000)
        # the newsletter prompt a fresh instance shows once, whenever it appears
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())

        # the asset graph: find the asset and select it
        page.goto(f"{ui}/asset-groups")
        for attempt in range(3):  # the prompt can pop up mid-typing and swallow the Enter: type again
            jump = page.get_by_placeholder("Jump to")
            jump.fill("prediction_monitoring")
            jump.press("Enter")
            try:  # the side panel of the selected asset
                page.get_by_text("View in Asset Catalog").wait_for(timeout=30_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
        page.get_by_role("button", name="Materialize selected").click()

        # the launch dialog: one partition, and a run config typed into the config editor
        dialog = page.locator(".bp5-dialog", has_text="Launch runs to materialize prediction_monitoring")
        partitions = dialog.locator("input[type=text]").first
        partitions.fill(DAY)
        partitions.press("Enter")
        dialog.get_by_text("1 partition", exact=True).wait_for()
        dialog.get_by_text("Config", exact=True).click()
        dialog.get_by_role("button", name="Add config").click()
        editor = page.locator(".bp5-dialog", has_text="Config Editor")
        editor.locator(".CodeMirror").first.click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        page.keyboard.type("ops: {prediction_monitoring: {config: {warn_psi: 0.4, min_images: 100}}}")
        editor.get_by_text("No errors").wait_for()
        page.get_by_role("button", name="Save config").click()
        dialog.get_by_text("Config saved").wait_for()
        dialog.get_by_role("button", name="Launch 1 run").click()
        dialog.wait_for(state="hidden")

        # the run: from the runs list to its page, until it succeeds
        page.locator("a[href='/runs']").first.click()
        page.locator("a[href^='/runs/']").first.click()
        page.get_by_text(f"partition: {DAY}").wait_for()
        page.get_by_text("Success", exact=True).first.wait_for(timeout=300_000)
        assert page.get_by_text("Failure", exact=True).count() == 0
        offline_page.screenshot("dagster-ui-run")

        # the asset's metadata, with the config from the UI and the plots
        page.goto(f"{ui}/assets/prediction_monitoring?partition={DAY}")
        plot = page.locator("tr", has=page.get_by_text(f"plot_drift_{VERSION}", exact=True))
        plot.wait_for()
        assert page.evaluate(METADATA, "drift_level") == "0.4"
        assert page.evaluate(METADATA, "requests") == "150"  # 300 images, 2 per request
        max_psi = page.evaluate(METADATA, "max_psi")
        # what a person reads: 4 significant digits (defs/metadata.py), the stored table keeps them all
        assert float(max_psi) > 0.4 and len(max_psi.replace(".", "").lstrip("0")) <= 4, max_psi
        plot.get_by_text("[Show Markdown]").click()
        shown = page.locator(".bp5-dialog", has_text=f"plot_drift_{VERSION}").locator("img")
        shown.wait_for()
        assert shown.get_attribute("src").startswith("data:image/png;base64,")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 300", arg=shown.element_handle())
        offline_page.screenshot("dagster-ui-asset-plot")

    # what the run wrote: the day's row, with the level typed in the UI, and the warning it earned
    table = pd.read_parquet(store.local_path(MONITORING_PARQUET))
    [row] = table.to_dict("records")
    assert (row["day"], row["images"], row["drift_level"]) == (DAY, 300, 0.4)
    assert row["psi"] > 0.4 and row["drift_warning"]
