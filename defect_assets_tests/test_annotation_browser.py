"""The annotation view and the classify-one-image page in a real browser (Playwright driving
Debian's Chromium, every request beyond 127.0.0.1 blocked) against a real server, on SYNTHETIC
surface photos: place three points and draw a box with the mouse at a zoom other than 1, move a
point, delete one, relabel one with its key, save; the stored rows are where the mouse went
(within 1 px, in image pixels), a reload shows them again, "no defect here" on the next photo is
stored too, and the patches cut from them are centered on them. Accepting two suggestions and
rejecting one stores the three decisions. The classify page shows what /v1/predict answers for
the same file as the whole photo's scores, and /v1/inspect's decision as the photo's. Screenshots
are saved in test-artifacts/."""

import json

import numpy as np
import pytest

from defect_assets.ml.images import decode_image
from defect_assets.ml.patches import PatchSpec, crop_centered
from defect_assets.pipeline.label_files import normalize_batch_labels
from defect_assets.pipeline.patching import build_patch_set, patches_of
from defect_assets.serving.client import DefectClient
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.annotations import MarkLog
from defect_assets_tests.helpers.annotations import BATCH, PHOTO, annotation_project
from defect_assets_tests.helpers.labeling import ANA, LABELERS
from defect_assets_tests.helpers.serving import ServiceThread

pytest_plugins = ["defect_assets_tests.browser"]  # the `browser` and `offline_page` fixtures

READY = "document.body.dataset.state === 'ready' && document.body.dataset.image === {image!r}"


def sign_in(page, url: str, image: str = PHOTO):
    response = page.goto(url + f"/annotate?batch={BATCH}&image={image}")  # the sign-in comes back here
    assert response.status == 401  # the sign-in form, not the page
    page.fill("#token", ANA)
    page.click("#sign-in")
    page.wait_for_function(READY.format(image=image))


def screen(page, x: float, y: float) -> tuple[float, float]:
    p = page.evaluate(f"annotator.toScreen({x}, {y})")
    return p["x"], p["y"]


def drag(page, a, b):
    page.mouse.move(*screen(page, *a))
    page.mouse.down()
    page.mouse.move(*screen(page, *b), steps=6)
    page.mouse.up()


@pytest.mark.slow
def test_mark_three_points_and_a_box_move_one_delete_one_save_and_reload(tmp_path, offline_page):
    store, versions, inventory = annotation_project(tmp_path)
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS)) as svc:
        svc.wait_ready(versions["a"])
        sign_in(page, svc.url, "line/photo-1.png")  # the photo the address names
        page.click("#prev")  # to the first photo
        page.wait_for_function(READY.format(image=PHOTO))
        assert page.evaluate("document.getElementById('photo').naturalWidth") == 240
        page.keyboard.press("-")  # zoom out one step from "fit": an uneven zoom
        page.mouse.move(700, 400)
        page.mouse.down(button="right")  # and pan a little
        page.mouse.move(650, 380, steps=4)
        page.mouse.up(button="right")
        zoom = page.evaluate("annotator.zoom")
        assert zoom > 1.5 and abs(zoom - round(zoom)) > 0.05

        page.keyboard.press("2")  # class 2: dent
        for x, y in [(40, 50), (120, 90), (200, 140)]:
            page.mouse.click(*screen(page, x, y))
        page.keyboard.press("3")  # class 3: scratch
        drag(page, (60, 100), (110, 150))
        drag(page, (40, 50), (70, 30))  # move the first point
        page.mouse.click(*screen(page, 120, 90))  # select the second
        page.keyboard.press("Delete")
        page.mouse.click(*screen(page, 200, 140))  # select the third and relabel it: key 1 = defect
        page.keyboard.press("1")
        assert page.locator("#marks li").count() == 3
        page.click("#save")
        page.wait_for_function("document.body.dataset.saved !== '' && document.body.dataset.state === 'ready'")
        shot = offline_page.screenshot("annotation-view-saved")

        stored = MarkLog(store).marks(BATCH)
        points = stored[stored["kind"] == "point"].sort_values("x")
        assert points["label"].tolist() == ["dent", "defect"]
        assert np.abs(points[["x", "y"]].to_numpy() - [[70, 30], [200, 140]]).max() <= 1.0
        boxes = stored[stored["kind"] == "box"]
        assert boxes["label"].tolist() == ["scratch"] and len(stored) == 3
        assert np.abs(boxes[["xmin", "ymin", "xmax", "ymax"]].to_numpy() - [[60, 100, 110, 150]]).max() <= 1.0
        assert set(stored["labeler"]) == {"ana"}

        page.reload()  # the saved marks come back
        page.wait_for_function(READY.format(image=PHOTO))
        shown = json.loads(page.evaluate("JSON.stringify(annotator.marks)"))
        assert shown == MarkLog(store).latest(BATCH)[(BATCH, PHOTO)].to_doc()["marks"]
        assert page.locator("#overlay .mark").count() == 3
        for _ in range(3):  # much closer: another zoom, the mouse still lands on the right pixel
            page.keyboard.press("+")
        assert page.evaluate("annotator.zoom") > 1.8 * zoom
        page.mouse.click(*screen(page, 131.5, 77.25))
        last = page.evaluate("annotator.marks[annotator.marks.length - 1]")
        assert abs(last["x"] - 131.5) <= 1 and abs(last["y"] - 77.25) <= 1
        page.keyboard.press("u")  # undone before any save: stored marks unchanged
        assert page.evaluate("annotator.marks.length") == 3
        page.keyboard.press("n")  # the next photo: "no defect here" (0), saved with S
        page.wait_for_function(READY.format(image="line/photo-1.png"))
        page.keyboard.press("0")
        page.keyboard.press("s")
        page.wait_for_function("document.body.dataset.saved !== '' && document.body.dataset.state === 'ready'")
        assert MarkLog(store).latest(BATCH)[(BATCH, "line/photo-1.png")].no_defect
    assert offline_page.blocked == []
    assert shot.exists() and shot.stat().st_size > 10_000

    # the patches built from them are centered on them
    labels, _ = normalize_batch_labels(inventory, store, page_marks=MarkLog(store).marks(BATCH))
    patch_set = build_patch_set(inventory, labels, store, PatchSpec(size=32))
    table = patch_set.table
    clean = table[table["image"] == "line/photo-1.png"]
    assert set(clean["kind"]) == {"negative"} and len(clean) == 2
    marked = table[table["kind"].isin(["point", "box"])].sort_values("x")
    centers = [(float(r.x), float(r.y)) for r in points.itertuples()] + [
        ((float(boxes["xmin"].iloc[0]) + float(boxes["xmax"].iloc[0])) / 2,
         (float(boxes["ymin"].iloc[0]) + float(boxes["ymax"].iloc[0])) / 2)]
    assert sorted(zip(marked["x"], marked["y"])) == sorted(centers)
    pixels = decode_image(store.read_bytes(inventory.loc[inventory["path"] == PHOTO, "stored_key"].iloc[0]), "L")
    cut = patches_of(patch_set)
    for i in marked.index:
        assert np.array_equal(cut[i], crop_centered(pixels, table.at[i, "x"], table.at[i, "y"], 32))
    assert (table["kind"] == "negative").sum() >= 3 and not table.loc[table["kind"] == "negative", "is_defect"].any()


@pytest.mark.slow
def test_accept_two_suggestions_reject_one_and_all_three_are_stored(tmp_path, offline_page):
    store, versions, _ = annotation_project(tmp_path)
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS)) as svc:
        svc.wait_ready(versions["a"])
        sign_in(page, svc.url)
        page.fill("#threshold", "0")
        page.click("#suggest")
        page.wait_for_function("document.querySelectorAll('#suggestions li.open').length >= 3")
        offered = json.loads(page.evaluate("JSON.stringify(annotator.suggestions)"))
        assert page.locator("#heatmap").is_visible()  # the model's heatmap over the photo
        assert page.evaluate("document.getElementById('heatmap').width") == 240
        page.click("#suggestions li:nth-child(1) button.accept")
        page.click("#suggestions li:nth-child(2) button.accept")
        page.click("#suggestions li:nth-child(3) button.reject")
        assert page.locator("#suggestions li.accepted").count() == 2
        assert page.locator("#suggestions li.rejected").count() == 1
        page.click("#save")
        page.wait_for_function("document.body.dataset.saved !== '' && document.body.dataset.state === 'ready'")
        offline_page.screenshot("annotation-view-suggestions")
    decisions = MarkLog(store).decisions(BATCH)
    assert sorted(zip(decisions["x"], decisions["y"], decisions["decision"])) == sorted(
        [(offered[0]["x"], offered[0]["y"], "accepted"), (offered[1]["x"], offered[1]["y"], "accepted"),
         (offered[2]["x"], offered[2]["y"], "rejected")])
    assert set(decisions["model_version"]) == {versions["a"]}
    marks = MarkLog(store).marks(BATCH)
    assert sorted(zip(marks["x"], marks["y"])) == sorted((s["x"], s["y"]) for s in offered[:2])
    assert offline_page.blocked == []


@pytest.mark.slow
def test_the_classify_page_shows_what_predict_answers(tmp_path, offline_page):
    store, versions, inventory = annotation_project(tmp_path)
    photo = tmp_path / "photo.png"
    photo.write_bytes(store.read_bytes(inventory.loc[inventory["path"] == PHOTO, "stored_key"].iloc[0]))
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1)) as svc:
        svc.wait_ready(versions["a"])
        client = DefectClient(svc.url)
        expected, inspected = client.predict([photo.read_bytes()])[0], client.inspect(photo.read_bytes())
        page.goto(svc.url + "/classify")
        page.set_input_files("#file", str(photo))
        page.click("#classify-button")
        page.wait_for_function("document.body.dataset.state === 'done'")
        shown = {r["label"]: float(r["p"]) for r in page.eval_on_selector_all(
            "tr.probability", "rows => rows.map(r => ({label: r.dataset.label, p: r.dataset.p}))")}
        assert shown == expected["probabilities"]  # the whole photo's probabilities, from /v1/predict
        assert page.locator(".card .whole").get_attribute("data-decision") == expected["decision"]
        # a 240x180 photo is larger than the model's window: its decision is what the windows located
        assert page.locator(".card .decision").inner_text() == inspected["decision"]
        assert page.locator(".card .found circle").count() == len(inspected["defects"])
        assert page.locator(".card .model-version").inner_text() == versions["a"]
        assert page.evaluate("document.querySelector('.card .heatmap').width") == 240  # the photo's own size
        assert page.locator(".card .heatmap").is_visible() and page.locator(".card .inspection").is_visible()
        offline_page.screenshot("classify-one-image")
    assert offline_page.blocked == []
