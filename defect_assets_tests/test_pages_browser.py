"""The service's pages as one site, in a real browser (Playwright driving Debian's Chromium, every
request beyond 127.0.0.1 blocked) against a real server: one navigation bar on every page with the
current page marked (and the Dagster UI when configured); /classify takes several files at once,
chosen or dropped, one result card each (an error in its own card only), a large photo decided by
the defects its windows located. Screenshots are saved in test-artifacts/."""

import pytest

from defect_assets.serving.settings import ServiceSettings
from defect_assets_tests.helpers.annotations import BATCH, PHOTO, annotation_project
from defect_assets_tests.helpers.labeling import ANA, LABELERS
from defect_assets_tests.helpers.serving import ServiceThread

pytest_plugins = ["defect_assets_tests.browser"]  # the `browser` and `offline_page` fixtures

DAGSTER_UI = "http://127.0.0.1:3999"
NAV = "document.getElementById('site-nav') && document.getElementById('site-nav').dataset.ready === '1'"


def nav_links(page) -> list[tuple[str, str, str | None]]:
    page.wait_for_function(NAV)
    return page.eval_on_selector_all("#site-nav a", "as => as.map(a => [a.textContent, a.getAttribute('href'), "
                                                    "a.getAttribute('aria-current')])")


@pytest.mark.slow
def test_one_navigation_bar_on_every_page_with_the_current_page_marked(tmp_path, offline_page):
    store, versions, _ = annotation_project(tmp_path)
    page = offline_page.page
    settings = ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS, dagster_ui_url=DAGSTER_UI)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        page.goto(svc.url + "/label")  # the sign-in form first (its cookie serves /annotate too)
        page.fill("#token", ANA)
        page.click("#sign-in")
        page.wait_for_url("**/label")
        expected = [("Dashboard", "/dashboard"), ("Label", "/label"), ("Annotate", "/annotate"),
                    ("Classify", "/classify"), ("API (OpenAPI)", "/openapi.json"), ("Dagster UI", DAGSTER_UI)]
        for path in ("/dashboard", "/label", "/annotate", "/classify"):
            response = page.goto(svc.url + path)
            assert response.status == 200, path
            links = nav_links(page)
            assert [(text, href) for text, href, _ in links] == expected, path
            assert [href for _, href, current in links if current == "page"] == [path]
            assert page.locator("#site-nav").bounding_box()["y"] == 0  # first on the page
            if path == "/label":  # no queue yet: the reason, and no empty photo frame, zoom or "loading" left
                page.wait_for_function("document.body.dataset.state === 'error'")
                assert "no labeling queue yet" in page.locator("#message").inner_text()
                assert not page.locator("#viewer").is_visible()
                assert page.locator("#queue-info").inner_text() == "no queue loaded"
            offline_page.screenshot(f"nav{path.replace('/', '-')}")
        page.click("#site-nav a[data-page='Dashboard']")  # the links work: from /classify to the dashboard
        page.wait_for_url("**/dashboard")
        assert page.request.get(svc.url + "/openapi.json").ok  # the API link's target (/docs is off: a CDN)
    assert offline_page.blocked == []


CARDS = """() => Array.from(document.querySelectorAll('#results .card')).map(c => {
  const seen = (name) => c.querySelector('.' + name).getClientRects().length > 0;
  return {file: c.dataset.file, state: c.dataset.state, decision: seen('result') ? c.dataset.decision : null,
          basis: c.querySelector('.basis').textContent, whole: c.querySelector('.whole').dataset.decision || null,
          wholeText: c.querySelector('.whole').textContent, message: c.querySelector('.card-message').textContent,
          probabilities: Object.fromEntries(Array.from(c.querySelectorAll('tr.probability'))
                                              .map(r => [r.dataset.label, Number(r.dataset.p)])),
          circles: Array.from(c.querySelectorAll('.found circle')).map(e => ['cx', 'cy', 'r']
                                                                     .map(a => Number(e.getAttribute(a)))),
          defects: c.querySelectorAll('.defects li').length,
          photo: seen('stack'), heatmap: seen('heatmap'), colorbar: seen('colorbar')};
})"""


def finished(count: int) -> str:
    """Every one of ``count`` cards answered (done, partial or error) and the page says so."""
    return (f"document.querySelectorAll('#results .card').length === {count} && "
            "Array.from(document.querySelectorAll('#results .card')).every(c => "
            "['done', 'partial', 'error'].includes(c.dataset.state)) && "
            "['done', 'error'].includes(document.body.dataset.state)")


def dent_photo(path, seed: int = 0):
    """A SYNTHETIC 480x360 surface with three defects (far larger than the tiny model's 32 px window)."""
    import numpy as np

    from defect_assets.ml.images import encode_png
    from defect_assets.ml.synthetic import make_surface_scene

    img, defects = make_surface_scene(np.random.default_rng(seed), 480, 360, defects=3, min_separation=80)
    path.write_bytes(encode_png(img))
    return defects


@pytest.mark.slow
def test_classify_two_images_at_once_each_in_its_own_card_a_large_photo_decided_by_its_windows(
        tmp_path, offline_page):
    """Two files chosen at once: a small image decided by /v1/predict, and a large photo with dents
    whose decision is what the windows located (the photo shrunk whole scores low), with the
    whole-photo score shown as what it is and a circle around each located window."""
    from defect_assets.serving.client import DefectClient
    from defect_assets_tests.conftest import png_bytes, smooth_image

    store, versions, _ = annotation_project(tmp_path)
    small, large = tmp_path / "small.png", tmp_path / "dents.png"
    small.write_bytes(png_bytes(smooth_image(40, 40, seed=3)))
    truth = dent_photo(large)
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, prediction_log=False)) as svc:
        svc.wait_ready(versions["a"])
        client = DefectClient(svc.url)
        said = {p.name: client.predict([p.read_bytes()])[0] for p in (small, large)}
        inspected = client.inspect(large.read_bytes())
        page.goto(svc.url + "/classify")
        assert page.locator("#file").get_attribute("multiple") is not None
        page.set_input_files("#file", [str(small), str(large)])
        page.click("#classify-button")
        page.wait_for_function(finished(2), timeout=120_000)
        first, second = page.evaluate(CARDS)
        offline_page.screenshot("classify-two-images")

    assert [first["file"], second["file"]] == ["small.png", "dents.png"]
    # the small image: predict's own answer, no windows
    assert first["state"] == "done" and first["decision"] == said["small.png"]["decision"]
    assert first["probabilities"] == said["small.png"]["probabilities"]
    assert first["basis"].startswith("whole image: defect score") and not first["heatmap"] and not first["circles"]
    # the large photo: the decision is the windows', consistent with what was located
    located = inspected["defects"]
    assert len(located) == 3 and inspected["decision"] == "defect"  # each synthetic defect found
    assert second["state"] == "done" and second["decision"] == "defect"
    assert second["basis"] == f"3 located in {inspected['windows']} windows of {inspected['window']} px"
    assert second["defects"] == 3 and second["heatmap"] and second["colorbar"]
    # ... while the photo shrunk whole into the model's input is shown as that, beside it
    assert said["dents.png"]["decision"] == "ok" and said["dents.png"]["defect_score"] < 0.5  # the confusion fixed
    assert second["whole"] == "ok" and second["wholeText"].startswith("defect score ")
    assert "not the decision" in second["wholeText"]
    # one circle per located defect: the window it was found in, centred on it (around it, not over it)
    assert sorted(second["circles"]) == sorted([d["x"], d["y"], inspected["window"] / 2] for d in located)
    for d in truth:
        assert any((d.x - x) ** 2 + (d.y - y) ** 2 < r ** 2 for x, y, r in second["circles"]), d  # inside
    assert offline_page.blocked == []


DROP = """(files) => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), (ch) => ch.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, {type: f.type}));
  }
  return dt;
}"""


@pytest.mark.slow
def test_classify_files_dropped_on_the_page_a_bad_one_errors_only_in_its_card(tmp_path, offline_page):
    """A real drop event (a DataTransfer of three files, one not an image) classifies the two good
    ones; the bad one's card alone says why. A new submission clears every old card first."""
    import base64

    from defect_assets.serving.client import DefectClient

    store, versions, inventory = annotation_project(tmp_path)
    photo = store.read_bytes(inventory.loc[inventory["path"] == PHOTO, "stored_key"].iloc[0])  # 240x180
    large = tmp_path / "dents.png"
    dent_photo(large, seed=1)
    bad = b"this is not an image at all\n" * 20
    files = [("photo.png", photo), ("notes.png", bad), ("dents.png", large.read_bytes())]
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, prediction_log=False)) as svc:
        svc.wait_ready(versions["a"])
        client = DefectClient(svc.url)
        want = {name: client.inspect(data)["decision"] for name, data in files if name != "notes.png"}
        page.goto(svc.url + "/classify")
        page.wait_for_function("document.getElementById('site-nav')")
        transfer = page.evaluate_handle(DROP, [{"name": n, "type": "image/png", "data": base64.b64encode(d).decode()}
                                               for n, d in files])
        page.dispatch_event("#drop-zone", "dragover", {"dataTransfer": transfer})
        assert page.evaluate("document.body.dataset.drag") == "over"  # the drop target lights up
        offline_page.screenshot("classify-drag-over")
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
        page.wait_for_function(finished(3), timeout=120_000)
        cards = page.evaluate(CARDS)
        assert page.evaluate("document.body.dataset.drag") is None
        assert page.evaluate("Array.from(document.getElementById('file').files).map(f => f.name)") == \
            [n for n, _ in files]
        message = page.locator("#message").inner_text()
        offline_page.screenshot("classify-dropped-one-bad")

        assert [c["file"] for c in cards] == [n for n, _ in files]
        good, refused, dents = cards
        for card in (good, dents):
            assert card["state"] == "done" and card["decision"] == want[card["file"]]
            assert card["photo"] and card["heatmap"] and len(card["probabilities"]) == 2
            assert card["defects"] == len(card["circles"])
            assert (card["decision"] == "defect") == (card["defects"] > 0)  # the headline follows the windows
        assert refused["state"] == "error" and refused["decision"] is None and refused["probabilities"] == {}
        assert not refused["photo"] and not refused["heatmap"]  # no broken image box
        assert refused["message"].startswith("file 0 (notes.png): ") and "not an image" in refused["message"]
        assert all("notes.png" not in c["message"] for c in (good, dents))
        assert message == "3 file(s): 2 classified, 1 refused (see the card)"

        # a new submission (the refused file alone, chosen): the three old cards are gone first
        bad_path = tmp_path / "notes.png"
        bad_path.write_bytes(bad)
        page.set_input_files("#file", str(bad_path))
        page.click("#classify-button")
        page.wait_for_function(finished(1) + " && document.body.dataset.state === 'error'", timeout=120_000)
        [only] = page.evaluate(CARDS)
        assert only["file"] == "notes.png" and only["state"] == "error" and only["decision"] is None
        assert page.locator(".card .heatmap").count() == 1 and not page.locator(".card .heatmap").is_visible()
        assert page.locator("#message").inner_text() == "1 file(s): 0 classified, 1 refused (see the card)"
        offline_page.screenshot("classify-refused-alone")
    assert offline_page.blocked == []


def _known_labels(store, tmp_path, batch: str = BATCH, labels=("defect", "ok", "defect"), seed: int = 7):
    """An ingested batch whose own labels.csv labels its first photos (what image_labels keeps)."""
    import pandas as pd

    from defect_assets.ml.labels import LABEL_COLUMNS
    from defect_assets.storage.formats import ArrayTable, write_value
    from defect_assets.storage.layout import asset_value_prefix
    from defect_assets_tests.helpers.annotations import ingested_batch

    inventory = ingested_batch(store, tmp_path, batch=batch, seed=seed)
    images = sorted(inventory.loc[inventory["role"] == "image", "path"])
    known = dict(zip(images, labels))
    rows = [{c: None for c in LABEL_COLUMNS} | {"image": p, "kind": "image", "label": lab, "source": "labels.csv",
                                                 "row": i + 2} for i, (p, lab) in enumerate(known.items())]
    write_value(store, asset_value_prefix("image_labels", batch), ArrayTable(pd.DataFrame(rows, columns=LABEL_COLUMNS),
                                                                              attrs={"batch": batch}))
    return known


INSTRUCTIONS = """# Telling the classes apart

A **defect** is a dent or a scratch you can see at 100 %; *ok* is a clean surface.

- ok: no mark at all
- defect: any dent <script>window.pwned = 1</script>
"""


@pytest.mark.slow
def test_label_at_360_px_guess_hidden_then_shown_instructions_and_practice_feedback(tmp_path, browser):
    from urllib.parse import urlsplit

    from defect_assets_tests.browser import LOCAL_HOSTS, OfflinePage
    from defect_assets_tests.helpers.labeling import labeling_project

    store, _, versions, queue = labeling_project(tmp_path, per_round=5)
    known = _known_labels(store, tmp_path)
    first_batch = queue.items.sort_values("rank")["batch"].iloc[0]
    store.write_bytes(f"labeling/instructions/{first_batch}.md", INSTRUCTIONS.encode())
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=1)
    shot = OfflinePage(context.new_page())

    def route(r):
        host = urlsplit(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            return r.continue_()
        shot.blocked.append(r.request.url)
        return r.abort()

    context.route("**/*", route)
    page = shot.page
    try:
        with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS)) as svc:
            svc.wait_ready(versions["a"])
            page.goto(svc.url + "/label")
            page.fill("#token", ANA)
            page.click("#sign-in")
            page.wait_for_function("document.body.dataset.state === 'ready' && document.body.dataset.item")
            box = page.locator("#photo").bounding_box()
            assert box["width"] >= 300, box  # usable at 360 px: the photo spans the screen
            assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing sticks out sideways
            # the guess is hidden until asked for (the default), then shown
            assert page.evaluate("document.body.dataset.guess") == "hidden"
            assert not page.locator("#guess").is_visible() and page.locator(".class-button.guessed").count() == 0
            shot.screenshot("label-360-guess-hidden")
            page.click("#show-guess")
            assert page.locator("#guess").is_visible()
            item = page.evaluate("document.body.dataset.item")
            assert page.locator("#guess").inner_text() == queue.item(item)["guess"]
            # the instructions beside the photo, rendered (bold, list) with no HTML let through
            assert page.locator("#instructions h3").inner_text() == "Telling the classes apart"
            assert page.locator("#instructions strong").first.inner_text() == "defect"
            assert page.locator("#instructions li").count() == 2
            assert "<script>" in page.locator("#instructions li").nth(1).inner_text()
            assert page.evaluate("window.pwned") is None
            # contrast and zoom act on the photo
            page.locator("#contrast").fill("2")
            assert page.evaluate("getComputedStyle(document.getElementById('photo')).filter") == "contrast(2)"
            page.locator("#zoom").fill("2")
            assert page.locator("#photo").bounding_box()["width"] > 1.8 * box["width"]
            page.click("#view-reset")
            shot.screenshot("label-360-guess-shown")

            page.click("#practice-start")  # the practice round: known labels, feedback, nothing stored
            page.wait_for_function("document.body.dataset.state === 'ready' && "
                                   "document.body.dataset.item.startsWith('practice:')")
            image = page.locator("#image-name").inner_text().split(" / ")[1].rsplit(" (", 1)[0]
            right = known[image]
            page.click(f".class-button[data-label='{right}']")
            page.wait_for_function("document.body.dataset.practice === 'agreed'")
            assert page.locator("#practice-feedback").inner_text() == f"Agreed: it is {right}."
            page.click("#practice-next")
            page.wait_for_function("document.body.dataset.state === 'ready' && "
                                   "!document.getElementById('practice-feedback').textContent")
            image = page.locator("#image-name").inner_text().split(" / ")[1].rsplit(" (", 1)[0]
            wrong = "ok" if known[image] == "defect" else "defect"
            page.keyboard.press(str(["defect", "ok"].index(wrong) + 1))  # by key: defect=1, ok=2 (sorted)
            page.wait_for_function("document.body.dataset.practice === 'disagreed'")
            assert page.locator("#practice-feedback").inner_text() == (
                f"Not the same: you said {wrong}, the known label is {known[image]}.")
            assert page.locator("#practice-progress").inner_text().startswith("image 2 of 3; 1 agreed")
            shot.screenshot("label-360-practice-feedback")
            page.click("#practice-end")
            page.wait_for_function("document.body.dataset.state === 'ready' && "
                                   "!document.body.dataset.item.startsWith('practice:')")
        from defect_assets.storage.labeling import LabelLog

        assert len(LabelLog(store).keys()) == 0  # practice answers are never stored as labels
        assert shot.blocked == []
    finally:
        context.close()


@pytest.mark.slow
def test_annotate_opens_on_the_first_image_that_needs_marks_with_the_batchs_own_classes(tmp_path, offline_page):
    """Batch a-done's labels.csv labels every photo (marks saved there would be ignored): skipped. Batch
    b-cells labels two of its three photos ok/defect per image (a binary ELPV-like task): the view opens
    on its third photo, offering its own class, not dent or scratch."""
    from defect_assets_tests.helpers.serving import model_registry

    store, registry, versions = model_registry(tmp_path)
    registry.promote(versions["a"], threshold=0.5)
    _known_labels(store, tmp_path, "a-done", ("ok", "defect", "ok"), seed=1)
    known = _known_labels(store, tmp_path, "b-cells", ("ok", "defect"), seed=2)
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, labelers=LABELERS)) as svc:
        svc.wait_ready(versions["a"])
        assert page.goto(svc.url + "/annotate").status == 401
        page.fill("#token", ANA)
        page.click("#sign-in")
        page.wait_for_function("document.body.dataset.state === 'ready' && document.body.dataset.image")
        assert page.evaluate("document.getElementById('batch').value") == "b-cells"
        unlabeled = "line/photo-2.png"
        assert unlabeled not in known
        assert page.evaluate("document.body.dataset.image") == unlabeled
        assert page.eval_on_selector_all("#classes .class-button", "bs => bs.map(b => b.dataset.label)") == ["defect"]
        options = page.locator("#batch option").all_inner_texts()
        assert options == ["a-done (0/3 annotated, 0 to mark)", "b-cells (0/3 annotated, 1 to mark)"]
        offline_page.screenshot("annotate-opens-on-needed-image")
        page.keyboard.press("0")  # "no defect here", then save: the drop-down's counts follow
        page.click("#save")
        page.wait_for_function("document.querySelector('#batch option[value=\"b-cells\"]').textContent"
                               ".includes('1/3 annotated, 0 to mark')")
    assert offline_page.blocked == []
