"""The labeling page in a real browser (Playwright driving Debian's Chromium, every request
beyond 127.0.0.1 blocked) against a real server: sign in with a labeler token, label three
images with a click and two keyboard keys, undo the last, and find exactly those labels stored
and the queue where it should be. A screenshot is saved in test-artifacts/."""

import pytest

from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.labeling import LabelLog
from defect_assets_tests.helpers.labeling import ANA, LABELERS, jcall, labeling_project
from defect_assets_tests.helpers.serving import ServiceThread

pytest_plugins = ["defect_assets_tests.browser"]  # the `browser` and `offline_page` fixtures

SHOWN = "document.body.dataset.state === 'ready' && document.body.dataset.item === {item!r}"


@pytest.mark.slow
def test_label_three_images_with_clicks_and_keys_then_undo_one(tmp_path, offline_page):
    store, _, versions, queue = labeling_project(tmp_path, per_round=5)
    order = queue.items.sort_values("rank")["item_id"].tolist()
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS)) as svc:
        svc.wait_ready(versions["a"])
        response = page.goto(svc.url + "/label")
        assert response.status == 401  # the sign-in form, not the page
        page.fill("#token", ANA)
        page.click("#sign-in")
        page.wait_for_function(SHOWN.format(item=order[0]))
        assert page.locator("#queue-info").inner_text().startswith("ana | queue " + queue.id)
        assert page.locator(".class-button").all_inner_texts() == ["ok\n1", "defect\n2"]
        photo_width = page.evaluate("document.getElementById('photo').naturalWidth")
        assert photo_width == 192  # the queued photo itself, shown large
        assert page.evaluate("document.getElementById('photo').getBoundingClientRect().height") > 300
        page.wait_for_function("document.getElementById('heatmap').complete && "
                               "document.getElementById('heatmap').naturalWidth === 192")
        assert page.locator("#heatmap").is_visible()
        guess = queue.item(order[0])["guess"]
        assert not page.locator("#guess").is_visible()  # hidden until asked for (the default)
        page.keyboard.press("g")
        assert page.locator("#guess").inner_text() == guess

        page.click(".class-button[data-label='defect']")  # image 1: a click
        page.wait_for_function(SHOWN.format(item=order[1]))
        page.keyboard.press("1")  # image 2: key 1 = ok
        page.wait_for_function(SHOWN.format(item=order[2]))
        page.keyboard.press("2")  # image 3: key 2 = defect
        page.wait_for_function(SHOWN.format(item=order[3]))
        assert page.locator("#progress-text").inner_text() == "3 labeled, 0 skipped, 2 to go of 5"
        page.click("#undo")  # undo the third: it is shown again
        page.wait_for_function(SHOWN.format(item=order[2]))
        assert page.locator("#progress-text").inner_text() == "2 labeled, 0 skipped, 3 to go of 5"
        shot = offline_page.screenshot("labeling-page-after-undo")

        _, view = jcall(svc.port, "GET", "/v1/labeling/queue", ANA)
    labels = LabelLog(store).labels()
    assert sorted(zip(labels["item"], labels["label"], labels["labeler"], labels["model_version"])) == sorted([
        (order[0], "defect", "ana", versions["a"]), (order[1], "ok", "ana", versions["a"])])
    assert len(LabelLog(store).keys()) == 4  # three labels and the undo: nothing deleted
    assert [i["status"] for i in view["items"]] == ["labeled", "labeled", "todo", "todo", "todo"]
    assert view["next"]["item_id"] == order[2] and view["progress"]["labeled"] == 2
    assert offline_page.blocked == []  # nothing beyond 127.0.0.1 was asked for: no CDN, no web font
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_no_label_is_taken_before_the_photo_is_shown(tmp_path, offline_page):
    """While the next photo is still on its way the page takes no label (the last photo must not be
    labeled as the next one), and a photo that cannot load can be skipped but not labeled."""
    store, _, versions, queue = labeling_project(tmp_path, per_round=5)
    order = queue.items.sort_values("rank")["item_id"].tolist()
    page = offline_page.page
    held = []
    page.route(f"**/v1/labeling/items/{order[1]}/image", lambda r: held.append(r))  # answered later, by hand
    page.route(f"**/v1/labeling/items/{order[2]}/image", lambda r: r.abort())  # never arrives
    photo = "document.getElementById('photo')"
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS)) as svc:
        svc.wait_ready(versions["a"])
        page.goto(svc.url + "/label")
        page.fill("#token", ANA)
        page.click("#sign-in")
        page.wait_for_function(SHOWN.format(item=order[0]))

        page.keyboard.press("2")  # labels the first; the second photo is held back
        page.wait_for_function("document.body.dataset.labeled === '1' && "
                               f"document.body.dataset.item === {order[1]!r}")
        assert page.evaluate(f"{photo}.style.visibility") == "hidden"  # not the first photo any more
        assert page.evaluate("document.body.dataset.state") == "busy"
        page.keyboard.press("1")  # ignored: the second photo is not shown yet
        page.keyboard.press("2")
        assert held and page.evaluate("document.body.dataset.labeled") == "1"
        held[0].continue_()
        page.wait_for_function(SHOWN.format(item=order[1]))
        assert page.evaluate(f"{photo}.naturalWidth") == 192
        assert page.evaluate(f"{photo}.style.visibility") == "visible"

        page.keyboard.press("1")  # labels the second; the third photo fails
        page.wait_for_function(SHOWN.format(item=order[2]))
        assert "could not be shown" in page.locator("#message").inner_text()
        assert page.evaluate(f"{photo}.style.visibility") == "hidden"
        page.keyboard.press("1")  # refused: that image was never shown
        page.wait_for_function("document.getElementById('message').textContent.includes('is not shown')")
        page.keyboard.press("s")  # skipping it is allowed
        page.wait_for_function(SHOWN.format(item=order[3]))
        assert page.locator("#progress-text").inner_text() == "2 labeled, 1 skipped, 2 to go of 5"
    labels = LabelLog(store).labels()
    assert sorted(zip(labels["item"], labels["label"])) == sorted([(order[0], "defect"), (order[1], "ok")])
