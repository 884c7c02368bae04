"""The labeling API on a real server (uvicorn on 127.0.0.1, a tiny model in a temporary registry,
a queue scored by it through the seam): every route needs a labeler token (401 without), bad
input gets a clear 4xx and stores nothing, the same label twice is one row, undo gives the image
back, two labelers interleaved lose and duplicate nothing, and the heatmap is the served model's."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.labeling import LabelLog
from defect_assets_tests.helpers.labeling import ANA, BEN, LABELERS, call, jcall, labeling_project
from defect_assets_tests.helpers.serving import API_KEY, ServiceThread


@pytest.fixture
def labeling(tmp_path):
    store, registry, versions, queue = labeling_project(tmp_path)
    settings = ServiceSettings(store=store, reload_seconds=0.1, api_key=API_KEY, labelers=LABELERS)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        yield svc, store, registry, versions, queue


def test_every_labeling_route_needs_a_labeler_token(labeling):
    svc, store, _, _, queue = labeling
    item = queue.items["item_id"].iloc[0]
    routes = [("GET", "/v1/labeling/queue", None), ("GET", "/v1/labeling/labels", None),
              ("GET", f"/v1/labeling/items/{item}/image", None), ("GET", f"/v1/labeling/items/{item}/heatmap", None),
              ("POST", "/v1/labeling/labels", {"item_id": item, "label": "defect"}),
              ("POST", "/v1/labeling/skips", {"item_id": item}), ("POST", "/v1/labeling/undo", {})]
    for method, path, body in routes:
        for token, headers in [(None, {}), ("not-a-labeler-token", {}), (None, {"X-API-Key": API_KEY}),
                               (None, {"Cookie": "defect_assets_labeler=wrong-token-000000"})]:
            status, doc = jcall(svc.port, method, path, token, body, headers)
            assert (status, doc.get("error")) == (401, "unauthorized"), (method, path, token, headers, doc)
    status, headers, page = call(svc.port, "GET", "/label")
    assert status == 401 and headers["content-type"].startswith("text/html") and b'name="token"' in page
    assert b"labeling.js" not in page  # the sign-in form, not the page
    assert LabelLog(store).keys() == []  # nothing was stored by any of them
    # with a token: the page, and the API (X-Labeler-Token works as well as Bearer)
    status, _, page = call(svc.port, "GET", "/label", ANA)
    assert status == 200 and b"/static/labeling/labeling.js" in page
    status, doc = jcall(svc.port, "GET", "/v1/labeling/queue", headers={"X-Labeler-Token": BEN})
    assert status == 200 and doc["labeler"] == "ben" and doc["progress"]["items"] == 5
    schemes = jcall(svc.port, "GET", "/openapi.json")[1]["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key" and schemes["LabelerToken"]["name"] == "X-Labeler-Token"
    assert schemes["LabelerBearer"]["scheme"] == "bearer"


def test_the_sign_in_form_sets_a_strict_http_only_cookie(labeling):
    svc, *_ = labeling
    form = "token=" + ANA
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = call(svc.port, "POST", "/label/login", raw=form.encode(), headers=ctype)
    assert status == 303 and headers["location"] == "/label"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0]
    status, doc = jcall(svc.port, "GET", "/v1/labeling/queue", headers={"Cookie": value})
    assert status == 200 and doc["labeler"] == "ana"
    status, _, page = call(svc.port, "POST", "/label/login", raw=b"token=wrong-token-000000", headers=ctype)
    assert status == 401 and b"not a labeler" in page
    # a write carried by the cookie from another site's page is refused
    item = doc["next"]["item_id"]
    status, err = jcall(svc.port, "POST", "/v1/labeling/labels", body={"item_id": item, "label": "ok"},
                        headers={"Cookie": value, "Origin": "http://evil.example"})
    assert (status, err["error"]) == (403, "cross_origin")


def test_a_session_is_opaque_server_side_and_ends_at_logout_and_expiry(labeling):
    """The cookie is a random session id (not the token), stored in the artifact store with its
    labeler and expiry; a cookie captured before logout is refused after it, and so is an expired one."""
    from defect_assets.storage.sessions import SessionStore

    svc, store, *_ = labeling
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = call(svc.port, "POST", "/label/login", raw=f"token={ANA}".encode(), headers=ctype)
    captured = headers["set-cookie"].split(";")[0]
    session = captured.split("=", 1)[1]
    assert status == 303 and ANA not in captured and len(session) >= 40
    assert [o.key.startswith("sessions/") for o in store.list("sessions/")] == [True]
    assert session not in store.list("sessions/")[0].key  # only its hash names the object
    assert jcall(svc.port, "GET", "/v1/labeling/queue", headers={"Cookie": captured})[0] == 200

    status, headers, _ = call(svc.port, "POST", "/label/logout", headers={"Cookie": captured})
    assert status == 303 and store.list("sessions/") == []
    status, doc = jcall(svc.port, "GET", "/v1/labeling/queue", headers={"Cookie": captured})
    assert (status, doc["error"]) == (401, "unauthorized")  # the copy kept from before logout is worthless
    status, _, page = call(svc.port, "GET", "/label", headers={"Cookie": captured})
    assert status == 401 and b'name="token"' in page

    expired = SessionStore(store).create("ana", -1)  # as if its 12 hours had passed
    status, doc = jcall(svc.port, "GET", "/v1/labeling/queue", headers={"Cookie": f"defect_assets_labeler={expired}"})
    assert (status, doc["error"]) == (401, "unauthorized") and store.list("sessions/") == []
    forged = "defect_assets_labeler=" + ANA  # the raw token as a cookie is no session either
    assert jcall(svc.port, "GET", "/v1/labeling/queue", headers={"Cookie": forged})[0] == 401


def test_access_log_never_holds_a_credential_from_a_query_string(labeling, caplog, capfd):
    svc, *_ = labeling
    caplog.set_level("INFO")
    for query in (f"token={ANA}", f"api_key={ANA}&page=2", f"X-Labeler-Token={ANA}", f"access_token={ANA}",
                  f"sig={ANA}", f"a=1&sessionid={ANA}"):
        assert jcall(svc.port, "GET", f"/v1/labeling/queue?{query}")[0] == 401
    logged = caplog.text + capfd.readouterr().err
    assert "GET /v1/labeling/queue?token=[redacted] HTTP/1.1" in logged
    assert "api_key=[redacted]&page=2" in logged and "a=1&sessionid=[redacted]" in logged
    assert ANA not in logged and ANA[:12] not in logged


def test_labeling_is_off_without_configured_tokens(tmp_path):
    store, _, versions, _ = labeling_project(tmp_path)
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1)) as svc:
        status, doc = jcall(svc.port, "GET", "/v1/labeling/queue", "anything-at-all-12345")
        assert status == 401 and "no labeler tokens" in doc["detail"]
        status, _, page = call(svc.port, "GET", "/label")
        assert status == 401 and b"Labeling is off" in page


def test_bad_input_gets_a_clear_4xx_and_stores_nothing(labeling):
    svc, store, _, _, queue = labeling
    item = queue.items["item_id"].iloc[0]
    cases = [
        ({"item_id": "0123456789abcdef", "label": "defect"}, 404, "not_in_queue"),
        ({"item_id": item, "label": "scratch"}, 422, "unknown_class"),
        ({"item_id": item}, 422, "invalid_request"),
        ({"label": "defect"}, 422, "invalid_request"),
        ({"item_id": "x" * 65, "label": "defect"}, 422, "invalid_request"),
    ]
    for body, status, error in cases:
        got, doc = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, body)
        assert (got, doc["error"]) == (status, error), (body, doc)
        assert doc["detail"]
    got, doc = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, raw=b"{not json",
                     headers={"Content-Type": "application/json"})
    assert (got, doc["error"]) == (422, "invalid_request")
    big = json.dumps({"item_id": item, "label": "defect", "pad": "x" * 100_000}).encode()
    got, doc = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, raw=big,
                     headers={"Content-Type": "application/json"})
    assert (got, doc["error"]) == (413, "payload_too_large")
    got, doc = jcall(svc.port, "POST", "/v1/labeling/skips", ANA, {"item_id": "nope"})
    assert (got, doc["error"]) == (404, "not_in_queue")
    got, doc = jcall(svc.port, "POST", "/v1/labeling/undo", ANA, {})
    assert (got, doc["error"]) == (409, "nothing_to_undo")
    got, doc = jcall(svc.port, "GET", "/v1/labeling/items/nope/image", ANA)
    assert (got, doc["error"]) == (404, "not_in_queue")
    assert LabelLog(store).keys() == []
    # a label, then a different one from the same labeler: 409 until undone; the first is kept
    assert jcall(svc.port, "POST", "/v1/labeling/labels", ANA, {"item_id": item, "label": "defect"})[0] == 201
    got, doc = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, {"item_id": item, "label": "ok"})
    assert (got, doc["error"]) == (409, "already_labeled")
    labels = LabelLog(store).labels()
    assert labels[["item", "label", "labeler"]].values.tolist() == [[item, "defect", "ana"]]


def test_a_label_stores_who_when_what_model_and_item_once(labeling):
    svc, store, _, versions, queue = labeling
    status, view = jcall(svc.port, "GET", "/v1/labeling/queue", ANA)
    first = view["next"]
    assert first["rank"] == 1 and first["status"] == "todo" and first["model_version"] == versions["a"]
    assert set(first["probabilities"]) == {"ok", "defect"} and first["heatmap_url"]
    status, _, png = call(svc.port, "GET", first["image_url"], ANA)
    assert status == 200 and Image.open(io.BytesIO(png)).size == (192, 160)
    assert png == store.read_bytes(queue.item(first["item_id"])["stored_key"])  # the stored bytes, untouched

    body = {"item_id": first["item_id"], "label": "defect"}
    s1, one = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, body)
    s2, two = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, body)
    assert (s1, one["stored"], s2, two["stored"]) == (201, True, 200, False)
    assert one["event"]["id"] == two["event"]["id"] and one["event"]["at"] == two["event"]["at"]
    assert one["progress"] == {"items": 5, "labeled": 1, "skipped": 0, "remaining": 4, "done": 1}
    assert one["next"]["rank"] == 2
    status, doc = jcall(svc.port, "GET", "/v1/labeling/labels", BEN)
    assert status == 200 and doc["count"] == 1
    row = doc["labels"][0]
    assert (row["labeler"], row["label"], row["model_version"], row["queue"], row["item"], row["batch"]) == \
           ("ana", "defect", versions["a"], queue.id, first["item_id"], "line-9")
    assert row["labeled_at"].startswith("20") and row["image"] == first["image"]

    # skip the next one, undo the skip, undo the label: both images come back, nothing is deleted
    second = one["next"]
    s, skipped = jcall(svc.port, "POST", "/v1/labeling/skips", ANA, {"item_id": second["item_id"]})
    assert s == 201 and skipped["progress"]["skipped"] == 1 and skipped["next"]["rank"] == 3
    s, undone = jcall(svc.port, "POST", "/v1/labeling/undo", ANA, {})
    assert s == 201 and undone["restored"]["item_id"] == second["item_id"] and undone["next"]["rank"] == 2
    s, undone = jcall(svc.port, "POST", "/v1/labeling/undo", ANA, {})
    assert undone["restored"]["item_id"] == first["item_id"] and undone["progress"]["labeled"] == 0
    assert LabelLog(store).labels().empty and len(LabelLog(store).keys()) == 4  # label, skip, two undos
    s, again = jcall(svc.port, "POST", "/v1/labeling/labels", ANA, body)
    assert s == 201 and again["event"]["id"] != one["event"]["id"]  # a new event after the undo
    assert LabelLog(store).labels()["event_id"].tolist() == [again["event"]["id"]]


def test_two_labelers_interleaved_lose_and_duplicate_nothing(labeling):
    svc, store, _, _, queue = labeling
    ids = queue.items.sort_values("rank")["item_id"].tolist()
    # both open the page at once and see the same first image; both label it, differently
    _, a = jcall(svc.port, "GET", "/v1/labeling/queue", ANA)
    _, b = jcall(svc.port, "GET", "/v1/labeling/queue", BEN)
    assert a["next"]["item_id"] == b["next"]["item_id"] == ids[0]
    assert jcall(svc.port, "POST", "/v1/labeling/labels", ANA, {"item_id": ids[0], "label": "defect"})[0] == 201
    assert jcall(svc.port, "POST", "/v1/labeling/labels", BEN, {"item_id": ids[0], "label": "ok"})[0] == 201
    # then each takes the next image in turn, interleaved, each posting twice (a double click)
    for token in (ANA, BEN, ANA):
        _, view = jcall(svc.port, "GET", "/v1/labeling/queue", token)
        item = view["next"]["item_id"]
        for _ in range(2):
            assert jcall(svc.port, "POST", "/v1/labeling/labels", token, {"item_id": item, "label": "defect"})[0] \
                in (200, 201)
    # the last image: both at the same instant, many times each, from threads
    barrier = threading.Barrier(8)

    def hammer(k):
        token, label = (ANA, "ok") if k % 2 else (BEN, "defect")
        barrier.wait()
        return jcall(svc.port, "POST", "/v1/labeling/labels", token, {"item_id": ids[4], "label": label})[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(hammer, range(8)))
    assert sorted(statuses).count(201) == 2 and set(statuses) <= {200, 201}

    labels = LabelLog(store).labels()
    got = sorted(zip(labels["labeler"], labels["item"], labels["label"]))
    expected = sorted([("ana", ids[0], "defect"), ("ben", ids[0], "ok"), ("ana", ids[1], "defect"),
                       ("ben", ids[2], "defect"), ("ana", ids[3], "defect"), ("ana", ids[4], "ok"),
                       ("ben", ids[4], "defect")])
    assert got == expected
    _, view = jcall(svc.port, "GET", "/v1/labeling/queue", ANA)
    assert view["progress"] == {"items": 5, "labeled": 5, "skipped": 0, "remaining": 0, "done": 5}
    assert view["next"] is None


def test_sixteen_simultaneous_labels_of_one_item_by_one_labeler_store_one(labeling):
    """The "undo first" rule under a race: 16 posts at once, half ok and half defect, one labeler,
    one item: exactly one 201 and one active label; the other label gets 409, repeats of the
    stored one 200."""
    svc, store, _, _, queue = labeling
    item = queue.items.sort_values("rank")["item_id"].iloc[0]
    barrier = threading.Barrier(16)

    def post(k):
        label = "ok" if k % 2 else "defect"
        barrier.wait()
        return label, jcall(svc.port, "POST", "/v1/labeling/labels", ANA, {"item_id": item, "label": label})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, range(16)))
    statuses = [status for _, (status, _) in results]
    assert statuses.count(201) == 1, statuses
    winner = next(label for label, (status, _) in results if status == 201)
    for label, (status, doc) in results:
        if label == winner:
            assert status in (200, 201)
        else:
            assert (status, doc.get("error")) == (409, "already_labeled"), doc
    status, doc = jcall(svc.port, "GET", "/v1/labeling/labels", ANA)
    assert status == 200 and doc["count"] == 1 and doc["labels"][0]["label"] == winner


def test_the_heatmap_is_the_served_models_and_only_for_its_queue(labeling):
    svc, store, registry, versions, queue = labeling
    row = queue.items.sort_values("rank").iloc[0]
    status, headers, png = call(svc.port, "GET", f"/v1/labeling/items/{row['item_id']}/heatmap", ANA)
    assert status == 200 and headers["content-type"] == "image/png"
    heat = np.asarray(Image.open(io.BytesIO(png)))
    assert heat.shape == (160, 192, 4)
    assert (heat[..., :3] == (230, 40, 30)).all() and heat[..., 3].max() > 0
    registry.promote(versions["b"], threshold=0.5)
    svc.wait_ready(versions["b"])
    status, doc = jcall(svc.port, "GET", f"/v1/labeling/items/{row['item_id']}/heatmap", ANA)
    assert (status, doc["error"]) == (409, "model_changed")
