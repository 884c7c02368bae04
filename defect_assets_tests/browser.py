"""Real-browser tests: Playwright driving Debian's Chromium (installed by ./run test; Playwright
downloads no browser). Pages are opened with every request that is not for 127.0.0.1 blocked
and recorded, so a page that needs the internet (a CDN script, a web font) fails its test.
Screenshots go to test-artifacts/ (git-ignored; CI keeps it as the run's artifacts)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("DEFECT_ASSETS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("DEFECT_ASSETS_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts"))
# As root in a container: no sandbox; and no background traffic to Google's hosts (refused here).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass
class OfflinePage:
    """A page whose requests beyond 127.0.0.1 are aborted and listed in ``blocked``."""

    page: object
    blocked: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module. Not per session: Playwright's sync API keeps an asyncio loop
    running in the main thread while it is open, so every later test of the same worker that calls
    asyncio.run (Dagster's automation-condition evaluator does) would fail."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./run test installs Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def offline_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    result = OfflinePage(context.new_page())

    def route(r):
        host = urlsplit(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            return r.continue_()
        result.blocked.append(r.request.url)
        return r.abort()

    context.route("**/*", route)
    yield result
    context.close()
