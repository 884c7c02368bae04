"""Benchmark: the scoring service under concurrent clients on 127.0.0.1, measured in the same
run as a naive server that calls ``model.predict`` once per request and a hello-world endpoint
on the same stack (FastAPI on uvicorn, same flags, access log off for all three). Prints
images/s, p50 and p99 latency of each and the ratios. Targets: >= 10x the naive server's
throughput at p99 <= 100 ms for 64x64 patches; >= 30% of the hello-world requests/s.

    .venv/bin/python bench/serve.py [--concurrency 32] [--seconds 4] [--data-dir DIR [--elpv 16] [--version V]]
        [--runtimes tensorflow onnxruntime openvino]

By default it registers a tiny 64x64 CNN (two 8-filter conv layers, 730 parameters; untrained,
as only its compute counts here) in a temporary folder; ``--data-dir data`` benchmarks the production model of
that artifact store instead (e.g. the ELPV champion after ``./run demo``; ``--elpv 16`` sends 16
real full-size cells, which the service resizes as training did). Each server runs
in its own process; the load generator (keep-alive connections, one image per request) runs
here. Every request count and duration is bounded; only 127.0.0.1 is contacted.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

HOST = "127.0.0.1"


# --- the two comparison servers (run as `bench/serve.py --role naive|hello --port P`) ---

def naive_app(data_dir: str):
    """What a first deployment often looks like: a sync endpoint, one eager model call per
    request. The model is loaded through the same seam as the service (any model kind, the
    elastic-net champion included), without the compiled path and without micro-batching."""
    from fastapi import FastAPI, File, UploadFile

    from defect_assets.ml.scorer import load_registered
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(LocalObjectStore(Path(data_dir) / "artifacts"))
    version = registry.production()["version"]
    scorer = load_registered(registry, version)
    app = FastAPI()

    @app.post("/predict")
    def predict(file: UploadFile = File(...)):
        p = scorer.predict_images([file.file.read()])[0]
        return {"model_version": version, "probabilities": dict(zip(scorer.classes, map(float, p)))}

    return app


def hello_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/hello")
    async def hello():
        return {"hello": "world"}

    return app


def run_role(role: str, port: int, data_dir: str) -> None:
    import uvicorn

    app = naive_app(data_dir) if role == "naive" else hello_app()
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


# --- the load generator: raw HTTP/1.1 on keep-alive connections (cheap enough not to be the limit) ---

def multipart_request(path: str, field: str, png: bytes, extra_headers: str = "") -> bytes:
    boundary = "benchboundary7f3a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"p.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n{extra_headers}\r\n").encode()
    return head + body


async def one_connection(port: int, requests: list[bytes], stop_at: float, warm_until: float,
                         latencies: list[float], errors: list[str], max_requests: int, counter: list[int]):
    reader, writer = await asyncio.open_connection(HOST, port)
    i = 0
    try:
        while time.perf_counter() < stop_at and counter[0] < max_requests:
            req = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            t1 = time.perf_counter()
            if status != 200:
                errors.append(f"{status} {body[:120]!r}")
            elif t0 >= warm_until:
                latencies.append(t1 - t0)
                counter[0] += 1
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        errors.append(f"connection lost: {e!r}")
    finally:
        writer.close()


async def load(port: int, requests: list[bytes], concurrency: int, seconds: float, warmup: float,
               max_requests: int) -> dict:
    latencies, errors, counter = [], [], [0]
    start = time.perf_counter()
    warm_until, stop_at = start + warmup, start + warmup + seconds
    await asyncio.gather(*(one_connection(port, requests, stop_at, warm_until, latencies, errors, max_requests,
                                          counter) for _ in range(concurrency)))
    measured = time.perf_counter() - warm_until
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "per_second": len(lat) / measured if measured > 0 else 0.0,
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "errors": errors}


# --- orchestration ---

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f}s")


def tiny_store(root: Path) -> str:
    from defect_assets.pipeline.tiny import register_tiny_model, synthetic_patch_set
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(LocalObjectStore(root / "artifacts"))
    patches = synthetic_patch_set(n_scenes=14, size=64, width=256, height=192)
    card = register_tiny_model(registry, {"synthetic": patches}, train=False, filters=(8,))
    registry.promote(card.version, threshold=0.5)
    return card.version


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=32, help="concurrent client connections (default 32)")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per server (default 4)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2, help="each server is measured this many times, "
                   "alternating; the best round counts (default 2)")
    p.add_argument("--max-requests", type=int, default=60_000, help="cap per server (default 60,000)")
    p.add_argument("--data-dir", help="benchmark the production model of DIR/artifacts instead of a tiny one")
    p.add_argument("--elpv", type=int, default=0, metavar="N",
                   help="send N real full-size ELPV cells (300x300 PNG from the elpv-dataset package) instead of "
                        "random images at the model's input size")
    p.add_argument("--version", help="with --data-dir: serve this registered version instead of the production one "
                   "(a promoted copy of the registry in a temporary folder; DIR is not changed)")
    p.add_argument("--runtimes", nargs="+", choices=["tensorflow", "onnxruntime", "openvino"], default=[],
                   help="also serve the same model on these runtimes (DEFECT_ASSETS_RUNTIME; onnxruntime/openvino: "
                        "the parity-checked export bundle), each measured at 1 and --concurrency clients beside the "
                        "others, in alternating rounds")
    p.add_argument("--role", choices=["naive", "hello"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        return run_role(args.role, args.port, args.data_dir)

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        if args.data_dir:
            data_dir = str(Path(args.data_dir).resolve())
            from defect_assets.storage import LocalObjectStore
            from defect_assets.storage.registry import ModelRegistry

            version = (ModelRegistry(LocalObjectStore(Path(data_dir) / "artifacts")).production() or {}).get("version")
            if not version:
                sys.exit(f"no production model in {data_dir}/artifacts (run ./run demo first)")
            if args.version:
                data_dir, version = str(tmp), serve_other_version(Path(data_dir), args.version, tmp)
        else:
            data_dir, version = str(tmp), tiny_store(tmp)
        run_bench(args, data_dir, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def serve_other_version(data_dir: Path, version: str, tmp: Path) -> str:
    """A copy of DIR's model registry in ``tmp`` with ``version`` in production (DIR is not touched),
    its threshold and test metrics taken from its evaluation report: the service then serves that
    model exactly as it would after a promotion (e.g. one family of the ELPV main job, to set its
    speed beside the champion's)."""
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    source = ModelRegistry(LocalObjectStore(data_dir / "artifacts"))
    family = ModelRegistry.family_of(version)
    if version not in {v.version for v in source.versions(family)}:
        sys.exit(f"no model version {version} in {data_dir}/artifacts")
    folder = data_dir / "artifacts" / "evaluations" / family
    reports = [json.loads(p.read_text()) for p in sorted(folder.glob("*/report.json"))]
    report = next((r for r in reversed(reports) if r.get("model_version") == version), None)
    if report is None:
        sys.exit(f"{version} has no evaluation report in {data_dir}/artifacts/evaluations/{family}")
    shutil.copytree(data_dir / "artifacts" / source.root, tmp / "artifacts" / source.root)
    copy = ModelRegistry(LocalObjectStore(tmp / "artifacts"))
    metrics = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
    copy.promote(version, threshold=report["threshold"], evaluation_id=report["evaluation_id"],
                 test_metrics={k: report[k] for k in metrics})
    return version


def run_bench(args, data_dir: str, version: str) -> None:
    from defect_assets.ml.images import encode_png
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(LocalObjectStore(Path(data_dir) / "artifacts"))
    card = registry.card(version)
    test = (registry.production() or {}).get("test_metrics") or {}
    size, channels = card.input.size, card.input.channels
    rng = np.random.default_rng(0)
    shape = (size, size) if channels == 1 else (size, size, 3)
    if args.elpv:
        from defect_assets.datasets.elpv import elpv_labels, elpv_root

        pngs = [(elpv_root() / p).read_bytes() for p in elpv_labels()["path"].iloc[:args.elpv]]
    else:
        pngs = [encode_png(rng.integers(60, 200, shape, dtype=np.uint8)) for _ in range(16)]
    what = f"{len(pngs)} full-size ELPV cells" if args.elpv else f"random {size}x{size} images"

    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": data_dir, "DEFECT_ASSETS_RELOAD_SECONDS": "30"}
    env.pop("DEFECT_ASSETS_API_KEY", None)
    runtimes = [rt for rt in dict.fromkeys(args.runtimes)]  # each once, in the order asked
    ports = {name: free_port() for name in ("service", "naive", "hello", *(f"rt_{rt}" for rt in runtimes))}
    cmds = {
        "service": [sys.executable, "-m", "defect_assets.cli", "serve", "--port", str(ports["service"]),
                    "--log-level", "warning"],
        "naive": [sys.executable, __file__, "--role", "naive", "--port", str(ports["naive"]), "--data-dir", data_dir],
        "hello": [sys.executable, __file__, "--role", "hello", "--port", str(ports["hello"])],
        **{f"rt_{rt}": [sys.executable, "-m", "defect_assets.cli", "serve", "--port", str(ports[f"rt_{rt}"]),
                        "--log-level", "warning"] for rt in runtimes},
    }
    envs = {n: {**env, "DEFECT_ASSETS_RUNTIME": n[3:]} if n.startswith("rt_") else env for n in cmds}
    logs = {n: open(Path(data_dir if not args.data_dir else tempfile.gettempdir()) / f"bench-serve-{n}.log", "wb")
            for n in cmds}
    procs = {n: subprocess.Popen(c, env=envs[n], cwd=ROOT, stdout=logs[n], stderr=subprocess.STDOUT)
             for n, c in cmds.items()}
    try:
        wait_http(f"http://{HOST}:{ports['hello']}/hello", procs["hello"])
        wait_http(f"http://{HOST}:{ports['service']}/readyz", procs["service"])
        wait_http(f"http://{HOST}:{ports['naive']}/docs", procs["naive"])
        for rt in runtimes:  # a bundle is exported and parity-checked at start: a while on 2 cores
            wait_http(f"http://{HOST}:{ports[f'rt_{rt}']}/readyz", procs[f"rt_{rt}"], timeout=600)
        hello_req = [f"GET /hello HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()]
        service_req = [multipart_request("/v1/predict", "files", png) for png in pngs]
        phases = [
            ("hello-world (GET, same stack)", "hello", hello_req, args.max_requests),
            ("defect_assets service", "service", service_req, args.max_requests),
            ("defect_assets service, 1 client", "service-1", service_req, args.max_requests),
            ("naive model.predict per request", "naive", [multipart_request("/predict", "file", png) for png in pngs],
             max(200, args.max_requests // 100)),
        ]
        for rt in runtimes:
            phases += [(f"service, runtime={rt}", f"rt_{rt}", service_req, args.max_requests),
                       (f"service, runtime={rt}, 1 client", f"rt_{rt}-1", service_req, args.max_requests)]
        print(f"model {version} ({card.kind}): {size}x{size}x{channels} input, {card.params or '?'} "
              f"parameters, {card.inference.views} test-time view(s); requests: {what}; "
              f"{args.concurrency} concurrent clients, {args.seconds:.0f} s per server, {os.cpu_count()} cores")
        if test:
            print(f"its test-split quality at promotion: accuracy {test.get('accuracy', float('nan')):.3f}, "
                  f"ROC AUC {test.get('roc_auc', float('nan')):.3f}, recall {test.get('recall', float('nan')):.3f}")
        results = {}
        for _ in range(max(1, args.rounds)):  # alternating rounds: a busy moment of the machine hits all alike
            for _label, name, reqs, cap in phases:
                clients = 1 if name.endswith("-1") else args.concurrency
                port = ports[name.removesuffix("-1")]
                r = asyncio.run(load(port, reqs, clients, args.seconds, args.warmup, cap))
                if name not in results or r["per_second"] > results[name]["per_second"]:
                    results[name] = r
        with urllib.request.urlopen(f"http://{HOST}:{ports['service']}/v1/model", timeout=10) as r:
            batching = json.loads(r.read())["batching"]
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in logs.values():
            f.close()

    print(f"{'server':<40}{'requests':>10}{'images/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for label, name, _, _ in phases:
        r = results[name]
        print(f"{label:<40}{r['requests']:>10,}{r['per_second']:>11,.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
              f"{len(r['errors']):>8}")
    s, n, h, one = results["service"], results["naive"], results["hello"], results["service-1"]
    if n["requests"] and s["requests"]:
        print(f"service / naive throughput:     {s['per_second'] / n['per_second']:6.1f}x  (target >= 10x)")
    else:
        print("service / naive throughput:     n/a (a server completed no request in the window: use a longer "
              "--seconds for a slow model)")
    print(f"service p99 latency, 1 client:  {one['p99']:6.1f} ms (target <= 100 ms)")
    print(f"service p99 latency, {args.concurrency} clients: {s['p99']:6.1f} ms")
    print(f"service / hello-world requests: {100 * s['per_second'] / max(h['per_second'], 1e-9):6.1f}%"
          "  (target >= 30%)")
    print(f"micro-batching: {batching['model_calls']:,} model calls for {batching['images']:,} images "
          f"(mean batch {batching['mean_batch']}, largest {batching['largest_batch']})")
    for rt in runtimes:
        many, one_rt = results[f"rt_{rt}"], results[f"rt_{rt}-1"]
        print(f"runtime={rt}: p99 at 1 client {one_rt['p99']:.1f} ms ({one_rt['p99'] / max(one['p99'], 1e-9):.2f}x the "
              f"default service's), {many['per_second']:.0f} images/s at {args.concurrency} clients "
              f"({many['per_second'] / max(s['per_second'], 1e-9):.2f}x)")
    for name, r in results.items():
        if r["errors"]:
            log = logs[name.removesuffix("-1")].name
            print(f"{name}: {len(r['errors'])} errors, first: {r['errors'][0]}; server log: {log}")


if __name__ == "__main__":
    main()
