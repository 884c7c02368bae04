"""Benchmark: does a flood of heavy requests starve /v1/predict or blow up the service's memory?
With four stride-1 suggestion requests (the annotation view's sliding windows) kept in flight,
one client's /v1/predict p99 is printed against its idle p99 (target: within 3x), and the
service's resident memory against what it held after warm-up (target: within 1.5x).

    .venv/bin/python bench/heavy_routes.py [--seconds 20] [--data-dir DIR]

By default a tiny 64 px CNN and a batch of SYNTHETIC photos in a temporary folder; ``--data-dir
data`` uses that artifact store's production model and its first ingested batch (the ELPV
champion after ``./run demo``). The service runs as `defect-assets serve` in its own process on
127.0.0.1; every request count and duration is bounded. Timings belong here, never in tests.
"""

import argparse
import collections
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from serve import HOST, free_port, tiny_store, wait_http  # noqa: E402

BATCH = "bench-heavy"


def synthetic_batch(root: Path) -> None:
    """SYNTHETIC surface photos ingested as raw_images stores them (what the annotation view reads)."""
    from defect_assets.ml.images import encode_png
    from defect_assets.ml.synthetic import make_surface_scene
    from defect_assets.pipeline.ingest import ingest_batch
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.batches import upload_files
    from defect_assets.storage.formats import ArrayTable, write_value
    from defect_assets.storage.layout import asset_value_prefix

    store, landing = LocalObjectStore(root / "artifacts"), LocalObjectStore(root / "landing")
    files = []
    for i, child in enumerate(np.random.SeedSequence(3).spawn(2)):
        img, _ = make_surface_scene(np.random.default_rng(child), 300, 300, defects=2, min_separation=60)
        files.append((f"photo-{i}.png", encode_png(img)))
    upload_files(landing, BATCH, files)
    inventory = ingest_batch(landing, store, BATCH)
    write_value(store, asset_value_prefix("raw_images", BATCH), ArrayTable(inventory, attrs={"batch": BATCH}))


def first_image(data_dir: Path) -> tuple[str, str]:
    from defect_assets.serving.annotation import AnnotationDesk
    from defect_assets.storage import LocalObjectStore

    desk = AnnotationDesk(LocalObjectStore(data_dir / "artifacts"), ("defect",))
    for batch in desk.batches():
        images = desk.images(batch)
        if images:
            return batch, images[0].image
    raise SystemExit(f"no ingested batch with images in {data_dir}/artifacts")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def predict_latencies(port: int, png: bytes, seconds: float, cap: int = 20_000) -> list[float]:
    from defect_assets.serving.client import multipart

    body, ctype = multipart("files", [("cell.png", png, "image/png")])
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    out, stop = [], time.monotonic() + seconds
    try:
        while time.monotonic() < stop and len(out) < cap:
            t0 = time.perf_counter()
            conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
    return out


def heavy_loop(port: int, token: str, batch: str, image: str, stop: threading.Event, statuses: collections.Counter):
    body = json.dumps({"image": image, "stride": 1}).encode()
    while not stop.is_set():
        conn = http.client.HTTPConnection(HOST, port, timeout=600)
        try:
            conn.request("POST", f"/v1/annotations/batches/{batch}/suggestions", body=body,
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] += 1
            if resp.status in (429, 503):
                stop.wait(float(resp.getheader("Retry-After") or 1))
        except OSError as e:
            statuses[type(e).__name__] += 1
        finally:
            conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds, idle and loaded (default 20)")
    p.add_argument("--data-dir", help="the production model and first ingested batch of DIR (default: tiny, SYNTHETIC)")
    p.add_argument("--max-windows", type=int, default=100_000,
                   help="the service's window cap (default 100,000, so stride 1 on a 300 px photo is scored, not "
                        "refused; the work budget still applies)")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-heavy-"))
    if args.data_dir:
        data_dir = Path(args.data_dir).resolve()
    else:
        data_dir = tmp
        tiny_store(tmp)
        synthetic_batch(tmp)
    batch, image = first_image(data_dir)
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(LocalObjectStore(data_dir / "artifacts"))
    card = registry.card(registry.production()["version"])
    size, channels = card.input.size, card.input.channels
    from defect_assets.ml.images import encode_png

    rng = np.random.default_rng(0)
    png = encode_png(rng.integers(60, 200, (size, size) if channels == 1 else (size, size, 3), dtype=np.uint8))

    token = secrets.token_urlsafe(18)
    port = free_port()
    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(data_dir), "DEFECT_ASSETS_RELOAD_SECONDS": "30",
           "DEFECT_ASSETS_PREDICTION_LOG": "0", "DEFECT_ASSETS_LABELER_TOKENS": f"bench:{token}",
           "DEFECT_ASSETS_MAX_WINDOWS": str(args.max_windows)}
    env.pop("DEFECT_ASSETS_API_KEY", None)
    log_path = tmp / "bench-heavy-service.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "defect_assets.cli", "serve", "--port", str(port),
                                 "--log-level", "warning"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    statuses: collections.Counter = collections.Counter()
    stop = threading.Event()
    try:
        wait_http(f"http://{HOST}:{port}/readyz", proc, timeout=600)
        predict_latencies(port, png, min(5.0, args.seconds / 4))  # warm-up
        warm_rss = rss_bytes(proc.pid)
        idle = predict_latencies(port, png, args.seconds)
        heavy = [threading.Thread(target=heavy_loop, args=(port, token, batch, image, stop, statuses), daemon=True)
                 for _ in range(4)]
        for t in heavy:
            t.start()
        peak = [warm_rss]

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes(proc.pid))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(1.0)  # the four heavy requests are in flight
        loaded = predict_latencies(port, png, args.seconds)
        stop.set()
        for t in heavy + [sampler]:
            t.join(60)
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

    p_idle, p_loaded = np.percentile(idle, 99), np.percentile(loaded, 99)
    print(f"model {card.version} ({card.kind}), {size}x{size}x{channels} input; suggestions on "
          f"{batch}/{image} at stride 1, 4 clients; {os.cpu_count()} cores")
    print(f"/v1/predict, 1 client, idle:              p99 {p_idle:8.1f} ms over {len(idle):,} requests")
    print(f"/v1/predict, 1 client, 4 heavy in flight: p99 {p_loaded:8.1f} ms over {len(loaded):,} requests")
    print(f"p99 ratio loaded / idle: {p_loaded / p_idle:6.2f}x  (target <= 3x)")
    print(f"service RSS after warm-up {warm_rss / 2**20:,.0f} MiB, peak under load {peak[0] / 2**20:,.0f} MiB: "
          f"{peak[0] / warm_rss:5.2f}x  (target <= 1.5x)")
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
    print(f"suggestion answers (200 scored, 422 over the budget, 429 heavy lane full, 503 deadline): {answers}")
    print(f"service log: {log_path}")


if __name__ == "__main__":
    main()
