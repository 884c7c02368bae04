"""A review decision under a real dagster-daemon: a suspect label of a labels.csv batch changed on
the review API is a label event like any other, so new_labels_sensor starts a relabel run, and the
rebuilt batch's image_labels carry the reviewed label instead of the file's."""

import os
import time

import dagster as dg
import pandas as pd
import pytest

from defect_assets.defs.active_learning.sensors import LABEL_EVENTS_TAG
from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.resources import default_resources
from defect_assets.ml.labels import PAGE_SOURCE
from defect_assets.pipeline.label_quality import ISSUE_COLUMNS
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value
from defect_assets.storage.labeling import LABEL_ISSUES, REVIEW_QUEUE, LabelLog
from defect_assets_tests.azurite import REPO
from defect_assets_tests.daemon import Daemon, wait_for
from defect_assets_tests.helpers.labeling import ANA, LABELERS, jcall
from defect_assets_tests.helpers.serving import ServiceThread, model_registry
from defect_assets_tests.test_labels_daemon import INSTANCE, runs
from defect_assets_tests.waits import SUBPROCESS_SECONDS


@pytest.mark.slow
def test_a_review_decision_rebuilds_the_batch_under_the_daemon(tmp_path, monkeypatch):
    from defect_assets.ml.synthetic import write_synthetic_surfaces

    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: defect_assets.definitions\n"
        f"      working_directory: {REPO}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DEFECT_ASSETS_DATA_DIR": str(data),
           "DEFECT_ASSETS_STORAGE": "local", "DEFECT_ASSETS_LABELS_SENSOR_INTERVAL_SECONDS": "2"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()

    store, registry, versions = model_registry(data)
    folder = tmp_path / "line-5"
    write_synthetic_surfaces(folder, n_images=4, seed=31, width=192, height=160, defects_per_image=(0, 2))
    (folder / "points.csv").unlink()
    photos = sorted(p.name for p in folder.glob("*.png"))
    (folder / "labels.csv").write_text("image,label\n" + "".join(f"{p},{'defect' if i % 2 else 'ok'}\n"
                                                                for i, p in enumerate(photos)))
    upload_folder(folder, LocalObjectStore(data / "landing"), "line-5")
    instance.add_dynamic_partitions(BATCHES, ["line-5"])
    assert dg.materialize([raw_images, image_labels], partition_key="line-5", instance=instance,
                          resources=default_resources(data)).success
    raw = read_value(store, "raw_images/line-5").table.set_index("path")
    suspect = photos[0]  # labels.csv says ok; the review changes it to defect
    issues = pd.DataFrame([{"rank": 1, "batch": "line-5", "image": suspect, "image_id": raw.loc[suspect, "sha256"],
                            "given_label": "ok", "suggested_label": "defect", "self_confidence": 0.04,
                            "suggested_probability": 0.96, "is_issue": True, "source": "labels.csv", "labeler": "",
                            "stored_key": raw.loc[suspect, "stored_key"], "width": 192, "height": 160}],
                          columns=ISSUE_COLUMNS)
    store.write_bytes(LABEL_ISSUES, issues.to_csv(index=False).encode())
    before = read_value(store, "image_labels/line-5").set_index("image")
    assert before.loc[suspect, "label"] == "ok" and before.loc[suspect, "source"] == "labels.csv"

    daemon = Daemon(tmp_path, env)
    try:
        with ServiceThread(ServiceSettings(store=store, reload_seconds=0.2, labelers=LABELERS)) as svc:
            status, doc = jcall(svc.port, "GET", "/v1/labeling/review", ANA)
            assert status == 200 and [i["image"] for i in doc["items"]] == [suspect]
            status, _ = jcall(svc.port, "POST", "/v1/labeling/review", ANA,
                              {"item_id": doc["items"][0]["item_id"], "label": "defect"})
            assert status == 201
            assert jcall(svc.port, "GET", "/v1/labeling/review", ANA)[1]["items"] == []  # not asked again
            daemon.start()
            digest = LabelLog(store).digests()["line-5"]
            wait_for("a successful relabel run for the review decision",
                     lambda: [r for r in runs(instance, **{LABEL_EVENTS_TAG: digest})
                              if r.status == dg.DagsterRunStatus.SUCCESS], daemon, SUBPROCESS_SECONDS)
            time.sleep(1)
    finally:
        daemon.stop_all()
    labels = LabelLog(store).labels("line-5")
    assert list(zip(labels["image"], labels["label"], labels["queue"])) == [(suspect, "defect", REVIEW_QUEUE)]
    after = read_value(store, "image_labels/line-5").set_index("image")
    assert after.loc[suspect, "label"] == "defect" and after.loc[suspect, "source"] == PAGE_SOURCE
    assert (after.drop(index=suspect)["source"] == "labels.csv").all() and len(after) == len(photos)
    instance.dispose()
