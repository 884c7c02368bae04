"""The service's pages as one site, in a real browser (Playwright driving Debian's Chromium, every
request beyond 127.0.0.1 blocked) against a real server: one navigation bar on every page with the
current page marked (and the Dagster UI when configured); /classify never leaves a previous photo's
decision beside a refused file. Screenshots are saved in test-artifacts/."""

import pytest

from defect_assets.serving.settings import ServiceSettings
from defect_assets_tests.helpers.annotations import PHOTO, annotation_project
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
            offline_page.screenshot(f"nav{path.replace('/', '-')}")
        page.click("#site-nav a[data-page='Dashboard']")  # the links work: from /classify to the dashboard
        page.wait_for_url("**/dashboard")
        assert page.request.get(svc.url + "/openapi.json").ok  # the API link's target (/docs is off: a CDN)
    assert offline_page.blocked == []


@pytest.mark.slow
def test_classify_a_refused_file_after_a_good_one_clears_the_stale_result(tmp_path, offline_page):
    store, versions, inventory = annotation_project(tmp_path)
    photo = tmp_path / "photo.png"
    photo.write_bytes(store.read_bytes(inventory.loc[inventory["path"] == PHOTO, "stored_key"].iloc[0]))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image at all\n" * 20)
    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1)) as svc:
        svc.wait_ready(versions["a"])
        page.goto(svc.url + "/classify")
        page.set_input_files("#file", str(photo))
        page.click("#classify-button")
        page.wait_for_function("document.body.dataset.state === 'done'")
        assert page.locator("#result").is_visible() and page.locator("#decision").inner_text()
        assert page.locator("#colorbar").is_visible()  # the heatmap's scale beside it
        page.set_input_files("#file", str(bad))
        page.click("#classify-button")
        page.wait_for_function("document.body.dataset.state === 'error'")
        assert not page.locator("#result").is_visible()
        assert page.locator("#decision").inner_text() == "" and page.locator("tr.probability").count() == 0
        assert not page.locator("#stack").is_visible()  # no broken image box, no old photo
        assert not page.locator("#heatmap").is_visible() and not page.locator("#colorbar").is_visible()
        message = page.locator("#message").inner_text()
        assert message.startswith("notes.png: ") and len(message) > len("notes.png: ")
        offline_page.screenshot("classify-refused-after-good")
    assert offline_page.blocked == []
