"""The service's contract: /openapi.json describes every JSON answer with a model of
``serving.schemas`` (no JSON route without one, no HTML page in it), real answers of the running
service are exactly their models (same keys, same values), and the sliding windows are one
computation: the labeling heatmap of a photo is /v1/inspect's heatmap of it at the same stride,
with windows cut at the model's patch size (not its smaller input size)."""

from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np
import pytest
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from PIL import Image

from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline.active_learning import QueueSettings, publish_next_queue
from defect_assets.serving import schemas
from defect_assets.serving.client import multipart
from defect_assets.serving.routes import annotations, dashboard, health, labeling, model, pages, scoring
from defect_assets.serving.settings import ServiceSettings
from defect_assets_tests.helpers.labeling import ANA, LABELERS, call, jcall, synthetic_pool
from defect_assets_tests.helpers.serving import API_KEY, ServiceThread, model_registry

PATCH = 48  # the big-patch model: windows of 48 px, shrunk to the tiny model's 32 px input


def big_patch_model(registry, version: str) -> str:
    """The tiny model registered again with a card saying its patches were cut at 48 px (and shrunk
    to its 32 px input, as training does for such models)."""
    card = registry.card(version)
    files = {name: registry.read_file(version, name) for name in card.files}
    base = {k: v for k, v in card.to_dict().items()
            if k not in ("version", "family", "created", "files", "schema_version")}
    base["input"] = {**card.input.to_dict(), "patch_size": PATCH}
    return registry.register(card.family, files, base).version


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A service with the big-patch model in production and a heatmap queue it scored."""
    tmp = tmp_path_factory.mktemp("contract")
    store, registry, versions = model_registry(tmp)
    version = big_patch_model(registry, versions["a"])
    registry.promote(version, threshold=0.5)
    scorer = load_registered(registry, version)
    assert (scorer.input_size, scorer.patch_size) == (32, PATCH)
    queue = publish_next_queue(store, scorer, synthetic_pool(store), QueueSettings(strategy="entropy", per_round=3),
                               heatmaps=True)
    settings = ServiceSettings(store=store, reload_seconds=0.1, api_key=API_KEY, labelers=LABELERS)
    with ServiceThread(settings) as svc:
        svc.wait_ready(version)
        yield svc, store, version, queue


def post_image(port: int, path: str, field: str, data: bytes) -> tuple[int, dict]:
    body, ctype = multipart(field, [("photo.png", data, "image/png")])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype, "X-API-Key": API_KEY})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def json_schema_of(op: dict, status: str) -> dict | None:
    return op["responses"][status].get("content", {}).get("application/json", {}).get("schema")


def test_every_json_route_declares_its_answer_and_no_page_is_in_the_schema(served):
    svc = served[0]
    doc = svc.app.openapi()
    json_routes, file_routes = [], []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert ok, f"{method} {path} declares no 2xx answer"
            for status in ok:
                content = op["responses"][status].get("content", {})
                assert content, f"{method} {path} {status} declares no content"
                if "application/json" not in content:
                    assert all(t.startswith(("image/", "text/csv", "application/xml", "application/zip"))
                               for t in content), (method, path, content)
                    file_routes.append((method, path))
                    continue
                schema = json_schema_of(op, status)
                assert schema and "$ref" in schema, f"{method} {path} {status}: JSON without a model ({schema})"
                name = schema["$ref"].rsplit("/", 1)[1]
                assert isinstance(getattr(schemas, name, None), type), f"{name} is not a model of serving.schemas"
                assert doc["components"]["schemas"][name]["properties"], name
                json_routes.append((method, path))
    assert ("post", "/v1/predict") in json_routes and ("get", "/v1/labeling/queue") in json_routes
    assert ("post", "/v1/annotations/batches/{batch}/marks") in json_routes
    assert ("get", "/v1/labeling/items/{item_id}/heatmap") in file_routes
    # the HTML pages are served but not described as API routes
    page_paths = {"/label", "/annotate", "/classify", "/dashboard", "/label/login", "/label/logout"}
    assert {r.path for r in pages.router.routes} == page_paths
    assert not any(r.include_in_schema for r in pages.router.routes)
    html_elsewhere = [(m.__name__, r.path) for m in (scoring, labeling, annotations, dashboard, model, health)
                      for r in m.router.routes if isinstance(r, APIRoute) and r.response_class is HTMLResponse]
    assert html_elsewhere == []
    assert not page_paths & set(doc["paths"])
    for page in ("/label", "/annotate", "/classify"):
        status, headers, html = call(svc.port, "GET", page, ANA)
        assert status == 200 and headers["content-type"].startswith("text/html"), page
        assert b'<script src="/static/common.js"></script>' in html, page
    status, headers, js = call(svc.port, "GET", "/static/common.js")
    assert status == 200 and b"async function api(" in js


def model_of(svc, method: str, path: str, status: str = "200") -> type:
    op = svc.app.openapi()["paths"][path][method]
    return getattr(schemas, json_schema_of(op, status)["$ref"].rsplit("/", 1)[1])


def exactly(model: type, doc: dict) -> None:
    """The answer is its model: it validates, and the model gives back the same JSON (no key more
    or less, no value changed)."""
    assert model.model_validate(doc).model_dump(mode="json") == doc


def test_real_answers_are_exactly_their_models(served):
    svc, store, version, queue = served
    row = queue.items.sort_values("rank").iloc[0]
    photo = store.read_bytes(row["stored_key"])

    status, predicted = post_image(svc.port, "/v1/predict", "files", photo)
    assert status == 200 and predicted["model_version"] == version
    exactly(model_of(svc, "post", "/v1/predict"), predicted)
    status, inspected = post_image(svc.port, "/v1/inspect?heatmap=false", "file", photo)
    assert status == 200 and inspected["heatmap_png"] is None
    exactly(model_of(svc, "post", "/v1/inspect"), inspected)
    # the photo's decision is what was located (the strongest defect's class), not the photo shrunk whole
    assert inspected["is_defect"] == bool(inspected["defects"])
    assert inspected["decision"] == (inspected["defects"][0]["kind"] if inspected["defects"] else "ok")
    assert inspected["max_window_score"] == pytest.approx(max(map(max, inspected["scores"])), abs=1e-5)
    status, info = jcall(svc.port, "GET", "/v1/model", headers={"X-API-Key": API_KEY})
    assert status == 200 and info["input"]["patch_size"] == PATCH
    exactly(model_of(svc, "get", "/v1/model"), info)

    status, view = jcall(svc.port, "GET", "/v1/labeling/queue", ANA)
    assert status == 200 and view["next"]["item_id"] == row["item_id"]
    exactly(model_of(svc, "get", "/v1/labeling/queue"), view)
    status, labeled = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, {"item_id": row["item_id"], "label": "ok"})
    assert status == 201 and labeled["stored"] and "restored" not in labeled
    exactly(model_of(svc, "post", "/v1/labeling/labels", "201"), labeled)
    status, again = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, {"item_id": row["item_id"], "label": "ok"})
    assert status == 200 and not again["stored"] and again["event"]["id"] == labeled["event"]["id"]
    status, undone = jcall(svc.port, "POST", "/v1/labeling/undo", ANA)
    assert status == 201 and undone["restored"]["item_id"] == row["item_id"]
    exactly(model_of(svc, "post", "/v1/labeling/undo", "201"), undone)
    status, labels = jcall(svc.port, "GET", "/v1/labeling/labels", ANA)
    assert status == 200 and labels == {"labels": [], "count": 0}
    exactly(model_of(svc, "get", "/v1/labeling/labels"), labels)


def test_the_labeling_heatmap_is_inspects_heatmap_with_patch_sized_windows(served):
    svc, store, version, queue = served
    for row in queue.items.sort_values("rank").head(2).to_dict("records"):
        photo = store.read_bytes(row["stored_key"])
        status, headers, png = call(svc.port, "GET", f"/v1/labeling/items/{row['item_id']}/heatmap", ANA)
        assert status == 200 and headers["content-type"] == "image/png"
        overlay = np.asarray(Image.open(io.BytesIO(png)))
        # the heatmap's stride is a quarter window (this photo fits the caps): inspect's default
        status, inspected = post_image(svc.port, f"/v1/inspect?stride={PATCH // 4}", "file", photo)
        assert status == 200 and (inspected["window"], inspected["stride"]) == (PATCH, PATCH // 4)
        assert inspected["grid"]["x"][0] == PATCH // 2  # the first window is 48 px wide: its center is at 24
        gray = np.asarray(Image.open(io.BytesIO(base64.b64decode(inspected["heatmap_png"]))))
        assert overlay.shape == gray.shape + (4,) == (row["height"], row["width"], 4)
        want = (gray.astype(np.uint16) * labeling.HEATMAP_MAX_ALPHA // 255).astype(np.uint8)
        np.testing.assert_array_equal(overlay[..., 3], want)
        assert gray.max() > 0 and len(np.unique(gray)) > 4  # a real map, not a constant
