"""The scoring service, run for real (uvicorn on 127.0.0.1, a tiny model in a temporary
registry): predictions equal the in-process scorer's, a model swap loses no request, a broken
model never replaces a working one, bad uploads get their documented 4xx, the API key guards
what it should, inspect finds a planted defect, and schemathesis finds no 5xx."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defect_assets.ml.images import encode_png
from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline.patching import patches_of
from defect_assets.serving.client import DefectClient, ServiceError, multipart
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.helpers.serving import API_KEY, ServiceThread, _template, model_registry, raw_request
from defect_assets_tests.waits import READY_SECONDS


def expected_proba(registry: ModelRegistry, version: str, images: list[bytes]) -> np.ndarray:
    scorer = load_registered(registry, version)
    return scorer.predict_images(images)


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds a few rows: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 2))
            + chunk(b"IEND", b""))


@pytest.fixture
def registry_copy(tmp_path):
    store, registry, versions = model_registry(tmp_path)
    registry.promote(versions["a"], threshold=0.4)
    return store, registry, versions


@pytest.fixture
def service(registry_copy):
    store, registry, versions = registry_copy
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, max_wait_ms=5)) as svc:
        svc.wait_ready(versions["a"])
        yield svc, registry, versions


# --- pure parts ---

def test_window_grid_covers_the_photo_and_windows_are_centered_crops():
    from defect_assets.ml.patches import crop_centered
    from defect_assets.serving import inspection

    img = smooth_image(70, 100, seed=1)
    grid = inspection.window_grid(100, 70, 32, 16)
    assert list(grid.xs) == [0, 16, 32, 48, 64, 68] and list(grid.ys) == [0, 16, 32, 38]  # last touches the border
    w = inspection.cut_windows(img, grid, np.arange(grid.count))
    assert w.shape == (24, 32, 32)
    r, c = 2, 4
    np.testing.assert_array_equal(w[r * 6 + c], crop_centered(img, grid.centers_x[c], grid.centers_y[r], 32))
    rgb = np.stack([img, img // 2, 255 - img], axis=2)
    wc = inspection.cut_windows(rgb, grid, np.array([r * 6 + c]))
    np.testing.assert_array_equal(wc[0], crop_centered(rgb, grid.centers_x[c], grid.centers_y[r], 32))
    small = inspection.window_grid(20, 12, 32, 8)
    assert small.count == 1 and inspection.cut_windows(img[:12, :20], small, np.array([0])).shape == (1, 32, 32)


def test_locate_keeps_the_strongest_of_neighbours_and_heatmap_has_the_photo_shape():
    from defect_assets.serving import inspection

    grid = inspection.window_grid(200, 120, 32, 8)
    s = np.zeros(grid.shape)
    s[5, 10], s[5, 11], s[6, 10] = 0.9, 0.8, 0.7  # one defect near (96, 56) seen by three windows
    s[2, 2] = 0.6  # a second, far away
    found = inspection.locate(s.ravel(), grid, 0.5, 32)
    assert [d["score"] for d in found] == [0.9, 0.6]
    assert 96 <= found[0]["x"] <= 104 and 56 <= found[0]["y"] <= 64  # refined towards the neighbours
    assert inspection.locate(s.ravel(), grid, 0.95, 32) == []
    heat = inspection.heatmap(s.ravel(), grid)
    assert heat.shape == (120, 200) and heat.dtype == np.uint8
    assert heat[56, 96] == 230 and heat[0, 199] == 0  # 0.9 * 255 at the strongest window's center
    assert inspection.heatmap(s.ravel(), grid, scale=4).shape == (30, 50)


def test_binary_decisions_use_the_threshold_and_multiclass_the_arg_max():
    from defect_assets.ml.scorer import Scorer
    from defect_assets.serving.models import ServedModel

    def served(classes, pointer):
        return ServedModel(Scorer({"version": "m-1", "kind": "keras", "task": "binary" if len(classes) == 2
                                   else "multiclass", "classes": classes, "input": {"size": 8, "channels": 1}},
                                  lambda x: x), pointer)

    p = np.array([[0.7, 0.3], [0.55, 0.45], [0.1, 0.9]])
    binary = served(["ok", "defect"], {"version": "m-1", "threshold": 0.4})
    assert binary.decide(p) == [("ok", False), ("defect", True), ("defect", True)]
    assert served(["ok", "defect"], {"version": "m-1"}).threshold == 0.5  # no threshold in the pointer
    assert served(["ok", "defect"], {"version": "m-1", "threshold": float("nan")}).threshold == 0.5
    multi = served(["background", "dent", "scratch"], {"version": "m-1", "threshold": 0.1})
    q = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    assert multi.threshold is None
    assert multi.decide(q) == [("background", False), ("scratch", True), ("background", False)]
    np.testing.assert_allclose(multi.defect_score(q), [0.5, 0.8, 0.6])


def test_settings_from_environment_and_the_key_stays_out_of_repr(tmp_path):
    env = {"DEFECT_ASSETS_API_KEY": API_KEY, "DEFECT_ASSETS_PREDICT_REQUIRES_KEY": "0",
           "DEFECT_ASSETS_MAX_UPLOAD_BYTES": "1_000_000", "DEFECT_ASSETS_MAX_WAIT_MS": "7.5"}
    s = ServiceSettings.from_env(LocalObjectStore(tmp_path), env)
    assert (s.api_key.get_secret_value(), s.predict_requires_key, s.max_upload_bytes, s.max_wait_ms) == (
        API_KEY, False, 1_000_000, 7.5)
    assert API_KEY not in repr(s) and not s.protects("predict") and s.protects("model")
    assert not ServiceSettings(LocalObjectStore(tmp_path)).protects("model")  # no key: open
    with pytest.raises(ValueError, match="DEFECT_ASSETS_MAX_BATCH"):
        ServiceSettings.from_env(LocalObjectStore(tmp_path), {"DEFECT_ASSETS_MAX_BATCH": "many"})


# --- the running service ---

@pytest.mark.slow
def test_predictions_over_http_equal_the_in_process_scorer(service):
    from defect_assets.serving.schemas import ModelInfo, PredictResponse

    svc, registry, versions = service
    from defect_assets.storage.formats import read_value

    root, _ = _template()
    ps = read_value(LocalObjectStore(root / "artifacts"), "labeled_patches/synthetic")
    images = [encode_png(p) for p in patches_of(ps)[:6]]  # exactly the model's input size
    images.append(png_bytes(smooth_image(90, 120, seed=4)))  # resized by the shared preprocessing
    rgb = np.stack([smooth_image(40, 50, seed=5)] * 3, axis=2)
    rgb[..., 0] //= 2
    images.append(png_bytes(rgb, "JPEG"))  # color JPEG -> gray, as in training
    client = DefectClient(svc.url)
    results = client.predict(images)
    want = expected_proba(registry, versions["a"], images)
    got = np.array([[r["probabilities"]["ok"], r["probabilities"]["defect"]] for r in results])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert [r["decision"] for r in results] == ["defect" if p >= 0.4 else "ok" for p in want[:, 1]]
    assert {r["model_version"] for r in results} == {versions["a"]}
    assert results[6]["sha256"] == hashlib.sha256(images[6]).hexdigest()
    PredictResponse.model_validate({"model_version": versions["a"], "threshold": 0.4, "results": results})

    info = client.model()
    ModelInfo.model_validate(info)
    card = registry.card(versions["a"])
    assert info["model_version"] == versions["a"] and info["threshold"] == 0.4
    assert (info["data_version"] == card.data_version.to_dict()
            and info["validation"]["roc_auc"] == card.validation.roc_auc)
    assert raw_request(svc.port, "GET", "/healthz") == (200, {"status": "alive"})
    status, doc = raw_request(svc.port, "GET", "/openapi.json")
    assert status == 200 and {"/v1/predict", "/v1/inspect", "/v1/model", "/healthz", "/readyz"} <= set(doc["paths"])


@pytest.mark.slow
def test_concurrent_requests_share_model_calls(service, monkeypatch):
    """48 requests arrive while the model is busy with the first call: the 48 - k waiting ones are
    then scored in full batches of max_batch (16), whatever the machine's load: 1 + ceil((48 - k) / 16)
    model calls, and every answer is the model's own."""
    svc, registry, versions = service
    images = [png_bytes(smooth_image(32, 32, seed=s)) for s in range(48)]
    want = expected_proba(registry, versions["a"], images)
    state = svc.app.state.service
    batcher, scorer = state.batcher, state.serving().scorer
    predict, first, release = scorer.predict_proba, [], threading.Event()

    def held(x):  # the first model call waits until every other request is queued behind it
        if not first:
            first.append(len(x))
            assert release.wait(READY_SECONDS), "the test never released the model"
        return predict(x)

    monkeypatch.setattr(scorer, "predict_proba", held)
    before = batcher.model_calls
    with ThreadPoolExecutor(len(images)) as pool:
        futures = [pool.submit(lambda im: DefectClient(svc.url).predict([im])[0], im) for im in images]
        deadline = time.monotonic() + READY_SECONDS
        while not (first and batcher.queued() == len(images) - first[0]):
            assert time.monotonic() < deadline, f"queued {batcher.queued()}, first call {first}"
            time.sleep(0.05)
        release.set()
        results = [f.result(timeout=READY_SECONDS) for f in futures]
    calls = batcher.model_calls - before
    got = np.array([r["probabilities"]["defect"] for r in results])
    np.testing.assert_allclose(got, want[:, 1], atol=1e-5)
    waiting = len(images) - first[0]
    assert calls == 1 + -(-waiting // batcher.max_batch), (calls, first, batcher.max_batch)
    assert batcher.largest_batch == batcher.max_batch == 16


@pytest.mark.slow
def test_swapping_the_model_during_a_stream_loses_no_request(service):
    svc, registry, versions = service
    image = png_bytes(smooth_image(48, 48, seed=7))
    want = {v: expected_proba(registry, versions[v], [image])[0] for v in ("a", "b")}
    by_version = {versions[v]: want[v] for v in want}
    assert abs(want["a"][1] - want["b"][1]) > 1e-3  # distinguishable answers
    stop, seen, failures = threading.Event(), [], []

    def stream(worker: int):
        client, mine = DefectClient(svc.url), []
        while not stop.is_set():
            try:
                r = client.predict([image])[0]
            except ServiceError as e:  # any failed request is a lost one
                failures.append(str(e))
                continue
            mine.append(r["model_version"])
            np.testing.assert_allclose([r["probabilities"]["ok"], r["probabilities"]["defect"]],
                                       by_version[r["model_version"]], atol=1e-5)
        seen.append(mine)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(stream, w) for w in range(4)]
        time.sleep(0.6)
        registry.promote(versions["b"], threshold=0.5)
        deadline = time.monotonic() + 20
        while svc.app.state.service.holder.current.version != versions["b"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)
        stop.set()
        for f in futures:
            f.result()
    assert failures == []
    flat = [v for mine in seen for v in mine]
    assert set(flat) == {versions["a"], versions["b"]} and len(flat) > 40
    for mine in seen:  # per client: once it got the new model, never the old one again
        first_b = mine.index(versions["b"])
        assert set(mine[first_b:]) == {versions["b"]}


@pytest.mark.slow
def test_a_broken_new_model_leaves_the_old_one_serving(service, caplog):
    svc, registry, versions = service
    store = registry.store
    client = DefectClient(svc.url)
    image = png_bytes(smooth_image(32, 32, seed=9))
    caplog.set_level(logging.ERROR, logger="defect_assets.serving")

    registry.promote(versions["garbage"], threshold=0.3)  # hashes match; Keras cannot load it
    deadline = time.monotonic() + 20
    while (client.model()["last_reload_error"] or {}).get("version") != versions["garbage"]:
        assert time.monotonic() < deadline, "the failed reload was not reported"
        time.sleep(0.05)
    assert client.predict([image])[0]["model_version"] == versions["a"]
    status, ready = raw_request(svc.port, "GET", "/readyz")
    assert status == 200 and ready["model_version"] == versions["a"]
    assert ready["last_reload_error"]["version"] == versions["garbage"]

    # a copy corrupted after promotion: the registry's hash check refuses it
    card = registry.card(versions["b"])
    path = Path(store.local_path(f"models/tiny_cnn/{versions['b']}/model.keras"))
    path.write_bytes(path.read_bytes()[:-64] + b"\0" * 64)
    store.write_bytes("models/production.json", json.dumps({"version": versions["b"], "family": card.family,
                                                            "promoted": "now", "threshold": 0.5}).encode())
    while (client.model()["last_reload_error"] or {}).get("version") != versions["b"]:
        assert time.monotonic() < deadline + 20, "the corrupt copy was not reported"
        time.sleep(0.05)
    info = client.model()
    assert info["model_version"] == versions["a"] and "does not match the hash" in info["last_reload_error"]["error"]
    assert raw_request(svc.port, "GET", "/readyz")[0] == 200
    assert client.predict([image])[0]["model_version"] == versions["a"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"could not load model {versions['garbage']}" in logged and f"keeping {versions['a']}" in logged


@pytest.mark.slow
def test_bad_uploads_get_their_documented_4xx_and_never_a_5xx(registry_copy):
    store, _, versions = registry_copy
    settings = ServiceSettings(store=store, max_upload_bytes=200_000, max_pixels=1_000_000, max_images=4,
                               body_timeout_seconds=1.0)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        good = png_bytes(smooth_image(32, 32))
        big = png_bytes(np.random.default_rng(0).integers(0, 255, (400, 400), dtype=np.uint8))  # 160 KB of noise

        def post(files, field="files", route="/v1/predict", ctype="image/png"):
            body, mp = multipart(field, [(f"f{i}.png", f, ctype) for i, f in enumerate(files)])
            return raw_request(svc.port, "POST", route, body, {"Content-Type": mp})

        cases = {
            "over the byte cap": (post([big, big]), 413, "payload_too_large"),
            "too many images": (post([good] * 5), 413, "too_many_images"),
            "over the pixel cap": (post([png_bytes(np.zeros((1100, 1000), np.uint8))]), 422, "image_rejected"),
            "decompression bomb": (post([huge_png_header(40_000, 40_000)]), 422, "image_rejected"),
            "truncated": (post([good[: len(good) // 2]]), 422, "image_rejected"),
            "not an image": (post([b"%PDF-1.4 definitely a document"]), 422, "image_rejected"),
            "empty file": (post([b""]), 422, "image_rejected"),
            "text part": (post([good], ctype="text/plain"), 415, "unsupported_media_type"),
            "json body": (raw_request(svc.port, "POST", "/v1/predict", b'{"image": "x"}',
                                      {"Content-Type": "application/json"}), 415, "unsupported_media_type"),
            "no files": (post([good], field="other"), 422, "invalid_request"),
            "inspect not an image": (post([b"GIF89a..."], field="file", route="/v1/inspect"), 422, "image_rejected"),
            "no closing boundary": (raw_request(svc.port, "POST", "/v1/predict", *_without_closing_boundary(good)),
                                    400, "bad_multipart"),
            "inspect bad stride": (raw_request(svc.port, "POST", "/v1/inspect?stride=0", *_mp_file(good)), 422,
                                   "invalid_request"),
        }
        for name, ((status, doc), want_status, want_error) in cases.items():
            assert (status, doc.get("error")) == (want_status, want_error), (name, doc)
            assert isinstance(doc.get("detail"), str) and doc["detail"], name
        assert "too many pixels" in cases["over the pixel cap"][0][1]["detail"]
        bomb = cases["decompression bomb"][0][1]["detail"]
        assert "decompression bomb" in bomb and "40000x40000" in bomb and "the cap of 1,000,000" in bomb, bomb
        assert "178956970" not in bomb and "178,956,970" not in bomb  # the service's cap, not Pillow's
        assert "closing boundary" in cases["no closing boundary"][0][1]["detail"]
        assert "truncated" in cases["truncated"][0][1]["detail"]

        # a declared length over the cap is refused before any byte of the body is sent
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
        conn.putrequest("POST", "/v1/predict")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(50_000_000))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["error"] == "payload_too_large"
        conn.close()
        # a chunked body without a length is cut off as soon as it passes the cap
        body, mp = multipart("files", [("a.png", big, "image/png"), ("b.png", big, "image/png")])
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
        conn.request("POST", "/v1/predict", body=(body[i:i + 16384] for i in range(0, len(body), 16384)),
                     headers={"Content-Type": mp}, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["error"] == "payload_too_large"
        conn.close()
        # a body that stops arriving is answered, not waited for
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
        conn.putrequest("POST", "/v1/predict")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", "5000")
        conn.endheaders(b"--x\r\n")
        resp = conn.getresponse()
        assert resp.status == 408 and json.loads(resp.read())["error"] == "request_timeout"
        conn.close()
        # and the service still answers normally
        ok = DefectClient(svc.url).predict([good])
        assert ok[0]["model_version"] == versions["a"]


def _without_closing_boundary(data: bytes) -> tuple[bytes, dict]:
    """A one-file upload cut off just before its closing ``--boundary--`` line."""
    body, headers = _mp_file(data)
    return body[:body.rindex(b"\r\n--") + 2], headers


def _mp_file(data: bytes) -> tuple[bytes, dict]:
    body, mp = multipart("file", [("x.png", data, "image/png")])
    return body, {"Content-Type": mp}


@pytest.mark.slow
def test_api_key_guards_what_it_should(registry_copy, caplog, capfd):
    store, _, versions = registry_copy
    caplog.set_level(logging.DEBUG)
    settings = ServiceSettings(store=store, api_key=API_KEY, predict_requires_key=False)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        image = png_bytes(smooth_image(32, 32))
        anonymous, wrong, right = DefectClient(svc.url), DefectClient(svc.url, "nope"), DefectClient(svc.url, API_KEY)
        assert anonymous.predict([image])[0]["model_version"] == versions["a"]  # predict made public
        for client in (anonymous, wrong):
            for call in (client.model, lambda c=client: c.inspect(png_bytes(smooth_image(64, 64)))):
                with pytest.raises(ServiceError) as e:
                    call()
                assert (e.value.status, e.value.error) == (401, "unauthorized")
        with pytest.raises(ServiceError, match="401"):
            DefectClient(svc.url, API_KEY[:-1] + "\u00e9").model()  # non-ASCII: still a clean 401
        assert right.model()["model_version"] == versions["a"]
        assert right.inspect(png_bytes(smooth_image(64, 64)))["windows"] == 25
        assert anonymous.ready()
        doc = raw_request(svc.port, "GET", "/openapi.json")[1]
        assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    out, err = capfd.readouterr()
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records) + out + err
    assert '"GET /v1/model HTTP/1.1" 401' in logged  # the access log is captured ...
    assert API_KEY not in logged and API_KEY[:-1] not in logged  # ... and the key is not in it


@pytest.mark.slow
def test_inspect_finds_a_planted_defect(service):
    from defect_assets.ml.synthetic import make_surface_scene

    svc, _, _ = service
    img, defects = make_surface_scene(np.random.default_rng(21), 256, 192, defects=2, min_separation=90)
    r = DefectClient(svc.url).inspect(encode_png(img), stride=8)
    assert r["windows"] == r["grid"]["columns"] * r["grid"]["rows"] == len(r["scores"]) * len(r["scores"][0])
    heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(r["heatmap_png"]))))
    assert heat.shape == (192, 256) and heat.max() > 200
    assert r["defects"], "nothing located"
    for d in defects:  # every planted defect has a located one within 12 px (the model saw 32 px patches)
        dist = min(np.hypot(f["x"] - d.x, f["y"] - d.y) for f in r["defects"])
        assert dist <= 12, (d, r["defects"])
    assert len(r["defects"]) <= len(defects) + 1  # and little else


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(registry_copy, tmp_path):
    store, _, versions = registry_copy
    labeler = "schemathesis-labeler-token"
    settings = ServiceSettings(store=store, api_key=API_KEY, max_upload_bytes=2_000_000,
                               labelers=(("fuzzer", labeler),))
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        operations = sum(len(methods) for methods in svc.app.openapi()["paths"].values())
        st = Path(sys.executable).with_name("st")
        cmd = [str(st), "run", f"{svc.url}/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", "15", "--max-time", str(3 * operations), "--seed", "7", "--workers", "1",
               "--request-timeout", "20", "-H", f"X-API-Key: {API_KEY}", "-H", f"X-Labeler-Token: {labeler}",
               "--no-shrink"]
        env = {**os.environ, "NO_COLOR": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 6 * operations, cwd=tmp_path, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", text)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 200, text[-2000:]
    assert f"Tested: {operations}" in text and operations >= 12  # every operation of the schema


def test_no_page_of_the_service_loads_from_a_cdn(service):
    """/docs and /redoc (FastAPI's Swagger UI and ReDoc, which load from a CDN) are off, the schema
    stays, and the dashboard links to neither."""
    svc, _, _ = service
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        status, doc = raw_request(svc.port, "GET", path)
        assert (status, doc.get("error")) == (404, "not_found"), path
    status, schema = raw_request(svc.port, "GET", "/openapi.json")
    assert status == 200 and "/v1/predict" in schema["paths"]
    dashboard = (Path(__file__).resolve().parents[1] / "defect_assets" / "serving" / "static" / "dashboard.html")
    page = dashboard.read_text()
    assert 'href="/docs"' not in page and 'href="/redoc"' not in page
    for html in (Path(__file__).resolve().parents[1] / "defect_assets" / "serving").rglob("*.html"):
        assert "cdn." not in html.read_text() and "unpkg" not in html.read_text(), html
