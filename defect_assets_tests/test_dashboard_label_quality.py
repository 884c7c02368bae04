"""The dashboard's label-quality panels and the practice round on gold items, against a real
server on 127.0.0.1: the worst suspect labels listed with photos that load (the stored bytes), the
labeler table's exact figures on a hand-made case (gold agreement, Cohen's kappa) and its CSV for
BI, each empty panel saying what fills it; practice items come from the gold set once one exists."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline.active_learning import QueueSettings, publish_next_queue
from defect_assets.pipeline.label_quality import ISSUE_COLUMNS
from defect_assets.serving.dashboard import LABELER_CSV, write_labeler_csv
from defect_assets.serving.labeling import LabelingDesk
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.labeling import LABEL_ISSUES, write_gold
from defect_assets_tests.helpers.labeling import ANA, LABELERS, call, jcall, synthetic_pool
from defect_assets_tests.helpers.serving import API_KEY, ServiceThread, model_registry

KEY = {"X-API-Key": API_KEY}


def write_issues(store, pool: pd.DataFrame) -> pd.DataFrame:
    """A label-issue table as label_issues writes it: three suspects (not in self-confidence order), one clean."""
    t = pool.head(4).assign(rank=[1, 2, 3, 4], given_label=["ok", "defect", "ok", "ok"],
                            suggested_label=["defect", "ok", "defect", "ok"],
                            self_confidence=[0.05, 0.2, 0.1, 0.9], suggested_probability=[0.95, 0.8, 0.9, 0.9],
                            is_issue=[True, True, True, False], source=["labels.csv", "labels.csv", "labeling page",
                                                                        "labels.csv"],
                            labeler=["", "", "ana", ""])[ISSUE_COLUMNS]
    store.write_bytes(LABEL_ISSUES, t.to_csv(index=False).encode())
    return t


@pytest.fixture
def project(tmp_path):
    store, registry, versions = model_registry(tmp_path / "artifacts")
    registry.promote(versions["a"], threshold=0.5)
    settings = ServiceSettings(store=store, reload_seconds=0.1, api_key=API_KEY, labelers=LABELERS)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        yield svc, store, registry, versions


def summary(svc) -> dict:
    status, _, body = call(svc.port, "GET", "/dashboard/api/summary", headers=KEY)
    assert status == 200, body
    return json.loads(body)


def test_dashboard_lists_suspects_with_photos_and_exact_labeler_figures(project):
    svc, store, registry, versions = project
    empty = summary(svc)
    assert empty["label_issues"] is None and empty["labelers"] is None
    assert "materialize label_issues" in empty["notes"]["label_issues"]
    assert "labeling_queue" in empty["notes"]["labelers"]

    # the worst suspects, lowest self-confidence first, each with its photo
    issues = write_issues(store, synthetic_pool(store, n=4, batch="line-2", seed=21))
    doc = summary(svc)
    panel = doc["label_issues"]
    assert panel["images"] == 4 and panel["issues"] == 3 and "label_issues" not in doc["notes"]
    assert [it["image"] for it in panel["shown"]] == list(issues["image"].iloc[[0, 2, 1]])
    assert [it["self_confidence"] for it in panel["shown"]] == [0.05, 0.1, 0.2]
    first = panel["shown"][1]
    assert (first["given_label"], first["suggested_label"], first["source"], first["labeler"]) == (
        "ok", "defect", "labeling page", "ana")
    assert all(it["review_url"] == "/label#review" for it in panel["shown"])
    for it, key in zip(panel["shown"], issues["stored_key"].iloc[[0, 2, 1]]):
        status, headers, data = call(svc.port, "GET", it["image_url"], headers=KEY)
        assert status == 200 and headers["content-type"] == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n"
        assert data == store.read_bytes(key)
    assert call(svc.port, "GET", panel["shown"][0]["image_url"])[0] == 401  # the dashboard's key, as elsewhere
    assert call(svc.port, "GET", "/dashboard/label_issues/0123456789abcdef/image", headers=KEY)[0] == 404
    status, _, csv = call(svc.port, "GET", "/dashboard/files/label_issues.csv", headers=KEY)
    assert status == 200 and len(pd.read_csv(io.BytesIO(csv))) == 4

    # labelers: gold set, a queue mixing it in at 25 %, hand-made answers and labels
    scorer = load_registered(registry, versions["a"])
    classes = scorer.classes
    known = synthetic_pool(store, n=4, batch="line-1", seed=11)
    write_gold(store, known.assign(label=[classes[i % 2] for i in range(4)]))
    queue = publish_next_queue(store, scorer, synthetic_pool(store, n=6), QueueSettings(per_round=6, gold_rate=0.25),
                               heatmaps=False)
    desk = LabelingDesk(store)
    desk.label("ana", queue.items[queue.items["gold_label"] == ""]["item_id"].iloc[0], classes[0])
    no_gold = summary(svc)["labelers"]
    assert no_gold["gold_items"] == 4 and "gold_rate" in no_gold["note"]
    g1, g2 = queue.items[queue.items["gold_label"] != ""].to_dict("records")
    real = queue.items[queue.items["gold_label"] == ""].to_dict("records")
    wrong = [c for c in classes if c != g2["gold_label"]][0]
    for who, answers in (("ana", (g1["gold_label"], g2["gold_label"])), ("ben", (g1["gold_label"], wrong))):
        for g, a in zip((g1, g2), answers):
            desk.label(who, g["item_id"], a)
    for r, (a, b) in zip(real[:4], [(classes[0], classes[0]), (classes[0], classes[1]), (classes[1], classes[1]),
                                    (classes[1], classes[1])]):
        desk.label("ana", r["item_id"], a)
        desk.label("ben", r["item_id"], b)
    labelers = summary(svc)["labelers"]
    assert labelers["note"] is None
    rows = {r["labeler"]: r for r in labelers["rows"]}
    # ana a a b b vs ben a b b b: po = 3/4, pe = 2/4*1/4 + 2/4*3/4 = 1/2 -> kappa 1/2 (both ways)
    assert rows["ana"] == {"labeler": "ana", "labeled": 4, "gold_answered": 2, "gold_agreement": 1.0,
                           "kappa_vs_others": pytest.approx(0.5), "kappa_pairs": 1}
    assert rows["ben"] == {"labeler": "ben", "labeled": 4, "gold_answered": 2, "gold_agreement": 0.5,
                           "kappa_vs_others": pytest.approx(0.5), "kappa_pairs": 1}
    status, page = jcall(svc.port, "GET", "/v1/labeling/labelers", ANA)
    assert status == 200 and page["labelers"] == labelers["rows"]

    # the same table for BI, in the store next to the label-issue tables
    assert call(svc.port, "GET", "/dashboard/files/labeler_quality.csv", headers=KEY)[0] == 404  # not written yet
    write_labeler_csv(store)
    status, _, csv = call(svc.port, "GET", "/dashboard/files/labeler_quality.csv", headers=KEY)
    assert status == 200 and csv == store.read_bytes(LABELER_CSV)
    table = pd.read_csv(io.BytesIO(csv)).set_index("labeler")
    assert table.loc["ben", "gold_agreement"] == 0.5 and table.loc["ana", "kappa_vs_others"] == pytest.approx(0.5)


def test_practice_items_come_from_the_gold_set_once_one_exists(project):
    svc, store, _, _ = project
    status, before = jcall(svc.port, "GET", "/v1/labeling/practice", ANA)
    assert status == 200 and before == {"items": [], "available": 0, "source": "label_files"}

    gold = synthetic_pool(store, n=4, batch="line-1", seed=11).assign(label=["ok", "defect", "ok", "defect"])
    write_gold(store, gold)
    status, doc = jcall(svc.port, "GET", "/v1/labeling/practice", ANA)
    assert status == 200 and doc["source"] == "gold" and doc["available"] == 4
    assert {(i["batch"], i["image"]) for i in doc["items"]} == set(zip(gold["batch"], gold["image"]))
    assert all(i["classes"] == ["defect", "ok"] and "known" not in i for i in doc["items"])
    known = dict(zip(gold["image"], gold["label"]))
    keys = dict(zip(gold["image"], gold["stored_key"]))
    for item in doc["items"]:
        status, headers, data = call(svc.port, "GET", item["image_url"], ANA)
        assert status == 200 and headers["content-type"] == "image/png"
        assert data == store.read_bytes(keys[item["image"]])
        status, fb = jcall(svc.port, "POST", "/v1/labeling/practice/answers", ANA,
                           {"item_id": item["item_id"], "label": "ok"})
        assert status == 200 and fb["known"] == known[item["image"]] and fb["agreed"] == (known[item["image"]] == "ok")
    assert call(svc.port, "GET", doc["items"][0]["image_url"])[0] == 401  # a labeler's route
