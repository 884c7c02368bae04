"""The README's two screenshots, taken in Debian's Chromium (Playwright, no browser download) from a
running main job: the service's dashboard and the Dagster UI's asset graph. Small PNGs (a 256-colour
palette), written atomically.

    ./run demo --quick                      # leaves the service on 127.0.0.1:8000
    DAGSTER_HOME=$PWD/.dagster_home .venv/bin/dagster-webserver -w workspace.yaml -p 3000 &
    .venv/bin/python docs/screenshots.py --service http://127.0.0.1:8000 --ui http://127.0.0.1:3000
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

from PIL import Image

CHROMIUM = os.environ.get("DEFECT_ASSETS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
OUT = Path(__file__).resolve().parent / "img"


def small_png(png: bytes, path: Path, width: int) -> int:
    """Scale to ``width`` and keep 256 colours; returns the bytes written (atomic rename)."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp, optimize=True)
    tmp.replace(path)
    return path.stat().st_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--service", default="http://127.0.0.1:8000")
    p.add_argument("--ui", default="http://127.0.0.1:3000")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--width", type=int, default=1100, help="width of the PNGs in pixels")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{a.service}/dashboard", wait_until="networkidle", timeout=120_000)
        page.wait_for_selector("svg, canvas", timeout=120_000)  # the charts drawn
        time.sleep(2)
        n = small_png(page.screenshot(full_page=False), a.out / "dashboard.png", a.width)
        print(f"{a.out / 'dashboard.png'}: {n:,} bytes")
        # every asset downstream of raw_images, in its group: the whole graph, groups expanded
        page.goto(f"{a.ui}/assets/raw_images?view=lineage&lineageScope=downstream&lineageDepth=12",
                  wait_until="networkidle", timeout=180_000)
        time.sleep(8)  # the graph's layout is computed in a web worker
        try:  # the UI's first-visit prompt
            page.get_by_role("button", name="Skip").click(timeout=10_000)
        except Exception:  # noqa: BLE001 - no prompt this time
            pass
        time.sleep(2)
        n = small_png(page.screenshot(full_page=False), a.out / "asset-graph.png", a.width)
        print(f"{a.out / 'asset-graph.png'}: {n:,} bytes")
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
