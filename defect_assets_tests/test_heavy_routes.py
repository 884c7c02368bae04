"""Heavy routes (many windows of one photo) cannot take the service down: background chunks yield
to /v1/predict in the model thread, windows are scored in small chunks, a work budget and a
deadline refuse what is too much, a full heavy lane answers 429 with Retry-After while predict
goes on, a client that goes away stops the scoring, and `defect-assets serve` stops on the first
SIGTERM while a heavy request is being scored. Real uvicorn on 127.0.0.1 and the tiny model; no
assertion on a duration (waits poll with generous deadlines)."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from defect_assets.ml.images import encode_png
from defect_assets.ml.scorer import Scorer, load_registered
from defect_assets.serving.batching import MicroBatcher
from defect_assets.serving.client import DefectClient, multipart
from defect_assets.serving.models import ServedModel
from defect_assets.serving.settings import ServiceSettings
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.helpers.ports import free_port
from defect_assets_tests.helpers.serving import ServiceThread, model_registry, raw_request

WAIT = 300  # seconds: a deadline for a busy 2-core machine, never a measurement


def poll(condition, what: str, timeout: float = WAIT, log=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}" + (f"; log:\n{log()}" if log else ""))
        time.sleep(0.05)


def test_background_chunks_wait_for_light_work_in_the_model_thread():
    """A heavy route's chunk queued before a /v1/predict batch is scored after it."""
    started, release, order = threading.Event(), threading.Event(), []

    def predict(x):
        order.append(int(x[0, 0, 0, 0]))
        if len(order) == 1:
            started.set()
            release.wait(WAIT)
        return np.tile([[0.5, 0.5]], (len(x), 1)).astype(np.float32)

    model = ServedModel(Scorer({"version": "m", "kind": "keras", "task": "binary", "classes": ["ok", "defect"],
                                "input": {"size": 2, "channels": 1}}, predict), {"version": "m"})

    def patches(marker, n=1):
        return np.full((n, 2, 2), marker, np.uint8)

    async def run():
        batcher = MicroBatcher(max_batch=16, max_wait_ms=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.score(model, patches(1), background=True))
        await asyncio.to_thread(started.wait, WAIT)  # the model thread is busy with chunk 1
        second = asyncio.ensure_future(batcher.score(model, patches(2), background=True))
        await asyncio.sleep(0)
        light = asyncio.ensure_future(batcher.score(model, patches(3, 4)))
        await asyncio.sleep(0)
        release.set()
        out = await asyncio.gather(first, second, light)
        await batcher.stop()
        return out, batcher.stats()

    (a, b, c), stats = asyncio.run(run())
    assert order == [1, 3, 2]  # the light request jumped the queued background chunk
    assert (a.shape, b.shape, c.shape) == ((1, 2), (1, 2), (4, 2))
    assert stats["background_calls"] == 2 and stats["model_calls"] == 3


@pytest.fixture
def heavy_service(tmp_path):
    store, registry, versions = model_registry(tmp_path)
    registry.promote(versions["a"], threshold=0.4)
    settings = ServiceSettings(store=store, reload_seconds=0.1, max_batch=16, max_heavy_requests=1)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        yield svc, svc.app.state.service, load_registered(registry, versions["a"])


def inspect(port: int, image: bytes, stride: int) -> tuple[int, dict, dict]:
    body, ctype = multipart("file", [("photo.png", image, "image/png")])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("POST", f"/v1/inspect?stride={stride}&heatmap=false", body=body,
                     headers={"Content-Type": ctype})
        resp = conn.getresponse()
        import json

        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_windows_are_scored_in_small_chunks_within_a_work_budget(heavy_service):
    svc, state, scorer = heavy_service
    assert scorer.cost > 0
    photo = png_bytes(smooth_image(120, 160, seed=3))  # stride 1: 129 x 89 = 11,481 windows of 32 px
    status, _, doc = inspect(svc.port, photo, 1)
    assert status == 200 and doc["windows"] == 129 * 89
    stats = state.batcher.stats()
    assert stats["largest_batch"] <= 16  # never hundreds of windows (and their activations) at once
    assert stats["background_calls"] >= doc["windows"] // 16

    # a budget of 500 windows of this model: stride 1 is refused with the stride that fits, which passes
    state.settings = state.settings.with_(max_work_gmac=500 * scorer.cost / 1e9)
    status, _, doc = inspect(svc.port, photo, 1)
    assert (status, doc["error"]) == (422, "over_work_budget"), doc
    assert "11,481 windows" in doc["detail"] and "over the budget" in doc["detail"]
    need = int(doc["detail"].rsplit("use stride >= ", 1)[1])
    status, _, ok = inspect(svc.port, photo, need)
    assert status == 200 and ok["windows"] <= 500

    # a deadline already passed: stopped after the first chunk with 503, not scored to the end
    state.settings = state.settings.with_(max_work_gmac=1e6, heavy_deadline_seconds=0)
    before = state.batcher.images
    status, headers, doc = inspect(svc.port, photo, 1)
    assert (status, doc["error"]) == (503, "deadline") and "retry-after" in headers
    assert state.batcher.images - before <= 16


def test_a_full_heavy_lane_answers_429_while_predict_goes_on(heavy_service):
    svc, state, _ = heavy_service
    photo = png_bytes(smooth_image(96, 96, seed=4))
    assert state.heavy.try_acquire()  # someone else's heavy request holds the only place
    try:
        status, headers, doc = inspect(svc.port, photo, 8)
        assert (status, doc["error"]) == (429, "busy") and headers["retry-after"].isdigit()
        result = DefectClient(svc.url).predict([png_bytes(smooth_image(32, 32, seed=5))])
        assert result[0]["decision"] in ("ok", "defect")
    finally:
        state.heavy.release()
    status, _, doc = inspect(svc.port, photo, 8)
    assert status == 200 and doc["windows"] > 1


def test_a_client_that_goes_away_stops_the_scoring(heavy_service):
    svc, state, _ = heavy_service
    state.settings = state.settings.with_(max_windows=2_000_000, max_work_gmac=1e9, heavy_deadline_seconds=3600)
    photo = encode_png(smooth_image(1000, 1000, seed=6))  # stride 1: 938,961 windows, many minutes of work
    body, ctype = multipart("file", [("big.png", photo, "image/png")])
    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=WAIT)
    sock.sendall(f"POST /v1/inspect?stride=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    before = state.batcher.background_calls
    poll(lambda: state.batcher.background_calls > before + 2, "the first chunks to be scored")
    sock.close()
    poll(lambda: state.heavy.active == 0, "the heavy request to end after its client went away")
    scored = state.batcher.images
    assert scored < 938_961 // 2  # it stopped long before the end
    status, _, _ = inspect(svc.port, png_bytes(smooth_image(64, 64)), 8)  # and the lane is free again
    assert status == 200


@pytest.mark.slow
def test_serve_stops_on_the_first_sigterm_during_a_heavy_request(tmp_path):
    _, registry, versions = model_registry(tmp_path / "data")
    registry.promote(versions["a"], threshold=0.4)
    port = free_port()
    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "DEFECT_ASSETS_MAX_WINDOWS": "2000000", "DEFECT_ASSETS_MAX_WORK_GMAC": "1000000000",
           "DEFECT_ASSETS_HEAVY_DEADLINE_SECONDS": "3600", "DEFECT_ASSETS_PREDICTION_LOG": "0"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "defect_assets.cli", "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    tail = lambda: log_path.read_text()[-3000:]  # noqa: E731
    try:
        client = DefectClient(f"http://127.0.0.1:{port}")
        poll(lambda: proc.poll() is None and client.ready() or proc.poll() is not None, "the service", log=tail)
        assert proc.poll() is None, tail()
        photo = encode_png(smooth_image(1000, 1000, seed=7))
        # the probes below hold the one heavy slot for a moment each: on a busy machine the big
        # request can arrive while they do and get its own 429, so it asks again until admitted
        heavy = threading.Thread(target=lambda: _swallow(_until_admitted, port, photo), daemon=True)
        heavy.start()
        small = png_bytes(smooth_image(64, 64))
        poll(lambda: inspect(port, small, 8)[0] == 429, "the heavy request to hold the heavy lane", log=tail)
        assert raw_request(port, "GET", "/healthz")[0] == 200  # the service is up and scoring
        proc.send_signal(signal.SIGTERM)  # once
        poll(lambda: proc.poll() is not None, "the service to stop after one SIGTERM", log=tail)
        # uvicorn ends by re-raising the signal it handled: a clean stop, not a kill
        assert proc.returncode in (0, -signal.SIGTERM), tail()
        assert "Finished server process" in log_path.read_text(), tail()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def _until_admitted(port: int, photo: bytes) -> None:
    while inspect(port, photo, 1)[0] == 429:
        time.sleep(0.2)


def _swallow(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass  # the service went away mid-request: that is the point
