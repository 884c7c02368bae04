"""The review queue of the labeling page in a real browser (Playwright + Chromium, outside network
blocked) against a real server: suspect labels listed with their given label, the model's label on
request, one confirmed and one changed; both stored as label events of the review queue, neither
asked again, and the changed one replaces the label file's label when the batch's labels are read."""

import pandas as pd
import pytest

from defect_assets.ml.labels import PAGE_SOURCE
from defect_assets.pipeline.label_quality import ISSUE_COLUMNS
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.labeling import LABEL_ISSUES, REVIEW_QUEUE, LabelLog
from defect_assets_tests.helpers.labeling import ANA, LABELERS, jcall, labeling_project, synthetic_pool
from defect_assets_tests.helpers.serving import ServiceThread

pytest_plugins = ["defect_assets_tests.browser"]


def write_issues(store, pool: pd.DataFrame) -> pd.DataFrame:
    """A label-issue table as label_issues writes it: three suspects of a labeled batch, one clean image."""
    given = ["ok", "defect", "ok", "ok"]
    suggested = ["defect", "ok", "defect", "ok"]
    t = pool.head(4).assign(rank=[1, 2, 3, 4], given_label=given, suggested_label=suggested,
                            self_confidence=[0.05, 0.1, 0.2, 0.9], suggested_probability=[0.95, 0.9, 0.8, 0.9],
                            is_issue=[True, True, True, False], source="labels.csv", labeler="")[ISSUE_COLUMNS]
    store.write_bytes(LABEL_ISSUES, t.to_csv(index=False).encode())
    return t


@pytest.mark.slow
def test_review_two_suspect_images(tmp_path, offline_page):
    store, _, versions, _ = labeling_project(tmp_path, per_round=3)
    issues = write_issues(store, synthetic_pool(store, n=4, batch="line-2", seed=21))
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS)) as svc:
        svc.wait_ready(versions["a"])
        page.goto(svc.url + "/label")
        page.fill("#token", ANA)
        page.click("#sign-in")
        page.wait_for_function("document.body.dataset.review === '3'")
        cards = page.locator(".review-item")
        assert cards.count() == 3
        assert page.locator(".review-item .given").all_inner_texts()[:2] == ["given: ok (labels.csv)",
                                                                          "given: defect (labels.csv)"]
        assert page.locator(".review-item .suggestion").all_inner_texts()[0] == ""  # not before it is asked
        page.wait_for_function("[...document.querySelectorAll('.review-photo')].every(i => i.complete && "
                               "i.naturalWidth === 192)")
        page.click("#review-suggestions")
        page.wait_for_function("document.querySelector('.review-item .suggestion').textContent.startsWith("
                               "'model: defect')")
        first, second = (page.locator(".review-item").nth(i).get_attribute("data-item") for i in (0, 1))
        page.click(f".review-item[data-item='{first}'] .review-button[data-label='ok']")  # confirm the given label
        page.wait_for_function("document.body.dataset.review === '2'")
        page.click(f".review-item[data-item='{second}'] .review-button[data-label='ok']")  # change defect -> ok
        page.wait_for_function("document.body.dataset.review === '1'")
        status, left = jcall(svc.port, "GET", "/v1/labeling/review", ANA)
        offline_page.screenshot("labeling-review")
    assert status == 200 and [i["image"] for i in left["items"]] == [issues["image"].iloc[2]]
    assert left["reviewed"] == 2
    labels = LabelLog(store).labels("line-2")
    assert sorted(zip(labels["image"], labels["label"], labels["queue"], labels["labeler"])) == sorted([
        (issues["image"].iloc[0], "ok", REVIEW_QUEUE, "ana"), (issues["image"].iloc[1], "ok", REVIEW_QUEUE, "ana")])
    assert offline_page.blocked == []

    # the changed label replaces the label file's when the batch's labels are normalized
    from defect_assets.pipeline.label_files import normalize_batch_labels

    csv = "image,label\n" + "".join(f"{r.image},{r.given_label}\n" for r in issues.itertuples())
    store.write_bytes("landing-copy/labels.csv", csv.encode())
    images = [{"path": r.image, "sha256": r.image_id, "stored_key": r.stored_key, "role": "image", "width": 192,
               "height": 160} for r in issues.itertuples()]
    label_file = {"path": "labels.csv", "sha256": "", "stored_key": "landing-copy/labels.csv", "role": "label_file",
                  "width": 0, "height": 0}
    inventory = pd.DataFrame(images + [label_file])
    table, notes = normalize_batch_labels(inventory, store, None, labels)
    by_image = dict(zip(table["image"], table["label"]))
    assert by_image[issues["image"].iloc[1]] == "ok"  # reviewed: changed from the file's 'defect'
    assert table.set_index("image").loc[issues["image"].iloc[1], "source"] == PAGE_SOURCE
    assert by_image[issues["image"].iloc[2]] == "ok" and by_image[issues["image"].iloc[3]] == "ok"
    assert any("reviewed" in n for n in notes)
