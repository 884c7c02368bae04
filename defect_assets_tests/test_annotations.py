"""Marks drawn on the photo, as data, on a real server (uvicorn on 127.0.0.1, the tiny model in a
temporary registry, a batch of SYNTHETIC surface photos ingested as raw_images stores it): every
route needs a labeler token; bad marks get a clear 4xx and store nothing; a save is one immutable
version; the marks join image_labels as point/box rows; the points.csv and Pascal VOC exports
re-import to identical rows; suggestion decisions are stored; the new-labels digest sees marks."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from defect_assets.ml.labels import NO_DEFECT_LABEL, PAGE_SOURCE, is_defect_label, parse_points_csv, parse_voc_xml
from defect_assets.ml.synthetic import make_surface_scene
from defect_assets.pipeline.label_files import normalize_batch_labels
from defect_assets.serving.client import DefectClient
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.annotations import MarkLog
from defect_assets.storage.formats import write_value
from defect_assets.storage.labeling import LabelLog
from defect_assets.storage.layout import asset_value_prefix
from defect_assets_tests.helpers.annotations import BATCH, PHOTO, SIZE, annotation_project
from defect_assets_tests.helpers.labeling import ANA, BEN, LABELERS, call, jcall
from defect_assets_tests.helpers.serving import API_KEY, ServiceThread

ROW_COLUMNS = ["image", "kind", "label", "x", "y", "xmin", "ymin", "xmax", "ymax"]


@pytest.fixture
def annotating(tmp_path):
    store, versions, inventory = annotation_project(tmp_path)
    settings = ServiceSettings(store=store, reload_seconds=0.1, api_key=API_KEY, labelers=LABELERS)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        yield svc, store, versions, inventory


MARKS = "/v1/annotations/batches/dents-1/marks"
GOOD = {"image": PHOTO, "marks": [
    {"kind": "point", "label": "dent", "x": 40.25, "y": 50.5},
    {"kind": "point", "label": "scratch", "x": 200, "y": 100.75},
    {"kind": "box", "label": "dent", "xmin": 100, "ymin": 20, "xmax": 141, "ymax": 60}]}


def test_every_annotation_route_needs_a_labeler_token(annotating):
    svc, store, *_ = annotating
    q = "?image=" + PHOTO
    routes = [("GET", "/v1/annotations/batches", None), ("GET", "/v1/annotations/batches/dents-1", None),
              ("GET", "/v1/annotations/batches/dents-1/image" + q, None), ("GET", MARKS + q, None),
              ("POST", MARKS, GOOD), ("POST", "/v1/annotations/batches/dents-1/suggestions", {"image": PHOTO}),
              ("GET", "/v1/annotations/batches/dents-1/points.csv", None),
              ("GET", "/v1/annotations/batches/dents-1/voc.zip", None),
              ("GET", "/v1/annotations/batches/dents-1/decisions", None)]
    for method, path, body in routes:
        for token, headers in [(None, {}), ("not-a-labeler-token", {}), (None, {"X-API-Key": API_KEY})]:
            status, doc = jcall(svc.port, method, path, token, body, headers)
            assert (status, doc.get("error")) == (401, "unauthorized"), (method, path, token, doc)
    status, headers, page = call(svc.port, "GET", "/annotate")
    assert status == 401 and b'name="token"' in page and b'value="/annotate"' in page
    status, _, page = call(svc.port, "GET", '/annotate?batch=dents-1&image="><script>')
    assert status == 401 and b"<script>" not in page and b'value="/annotate?batch=dents-1&amp;image=&quot;' in page
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for target, where in [("/annotate?batch=dents-1", "/annotate?batch=dents-1"), ("https://evil.example/", "/label"),
                          ("//evil.example/annotate", "/label"), ("/annotate", "/annotate")]:
        status, headers, _ = call(svc.port, "POST", "/label/login", raw=f"token={ANA}&next={quote(target)}".encode(),
                                  headers=form)
        assert (status, headers["location"]) == (303, where)
    assert MarkLog(store).annotations() == []
    status, _, page = call(svc.port, "GET", "/annotate", ANA)
    assert status == 200 and b"/static/annotate/annotate.js" in page
    status, doc = jcall(svc.port, "GET", "/v1/annotations/batches", ANA)
    assert status == 200 and doc["batches"] == [{"batch": BATCH, "images": 3, "annotated": 0, "needs_marks": 3}]
    status, headers, data = call(svc.port, "GET", "/v1/annotations/batches/dents-1/image?image=" + PHOTO, ANA)
    assert status == 200 and headers["content-type"] == "image/png" and data[:4] == b"\x89PNG"


def test_bad_marks_get_a_clear_4xx_and_store_nothing(annotating):
    svc, store, *_ = annotating
    point = {"kind": "point", "label": "dent", "x": 10, "y": 10}
    cases = [
        ({"image": PHOTO, "marks": [{**point, "x": 240}]}, 422, "outside_image"),  # x == width
        ({"image": PHOTO, "marks": [{**point, "y": -0.5}]}, 422, "outside_image"),
        ({"image": PHOTO, "marks": [{"kind": "box", "label": "dent", "xmin": 200, "ymin": 10, "xmax": 250,
                                     "ymax": 30}]}, 422, "outside_image"),
        ({"image": PHOTO, "marks": [{"kind": "box", "label": "dent", "xmin": 20, "ymin": 10, "xmax": 20,
                                     "ymax": 30}]}, 422, "outside_image"),  # empty box
        ({"image": PHOTO, "marks": [{**point, "label": "rust"}]}, 422, "unknown_class"),
        ({"image": PHOTO, "marks": [{**point, "kind": "polygon"}]}, 422, "invalid_mark"),
        ({"image": PHOTO, "marks": [{"kind": "point", "label": "dent", "x": 3}]}, 422, "invalid_mark"),
        ({"image": PHOTO, "marks": [point], "no_defect": True}, 422, "contradiction"),
        ({"image": PHOTO, "marks": []}, 422, "empty_annotation"),
        ({"image": PHOTO, "marks": [point], "suggestions": [{"x": 1, "y": 1, "score": 0.9, "decision": "maybe"}],
          "model_version": "m"}, 422, "invalid_suggestion"),
        ({"image": "line/nope.png", "marks": [point]}, 404, "unknown_image"),
        ({"image": PHOTO, "marks": "many"}, 422, "invalid_request"),
        # coordinates are JSON numbers: a string or a boolean is refused, never read as 5 or 1
        ({"image": PHOTO, "marks": [{**point, "x": "5"}]}, 422, "invalid_request"),
        ({"image": PHOTO, "marks": [{**point, "y": True}]}, 422, "invalid_request"),
        ({"image": PHOTO, "marks": [{"kind": "box", "label": "dent", "xmin": "1", "ymin": 1, "xmax": 9,
                                     "ymax": 9}]}, 422, "invalid_request"),
        ({"image": PHOTO, "marks": [point], "suggestions": [{"x": True, "y": 1, "score": 0.9,
                                                             "decision": "accepted"}], "model_version": "m"},
         422, "invalid_request"),
        # more marks than the cap: 413, as docs/annotation.md says
        ({"image": PHOTO, "marks": [point] * 501}, 413, "too_many_marks"),
    ]
    for body, status, error in cases:
        got, doc = jcall(svc.port, "POST", MARKS, ANA, body)
        assert (got, doc["error"]) == (status, error), (body, doc)
        assert doc["detail"]
    got, doc = jcall(svc.port, "POST", "/v1/annotations/batches/nope/marks", ANA, GOOD)
    assert (got, doc["error"]) == (404, "unknown_batch")
    got, doc = jcall(svc.port, "POST", MARKS, ANA, raw=b"x" * 300_000, headers={"Content-Type": "application/json"})
    assert got == 413
    assert MarkLog(store).annotations() == [] and store.list("labeling/") == []


def test_a_save_is_one_version_and_the_latest_counts(annotating):
    svc, store, *_ = annotating
    status, doc = jcall(svc.port, "POST", MARKS, ANA, GOOD)
    assert status == 201 and doc["stored"] and doc["annotation"]["labeler"] == "ana"
    first = doc["annotation"]["id"]
    assert doc["annotation"]["marks"][0] == {"kind": "point", "label": "dent", "x": 40.25, "y": 50.5}
    assert jcall(svc.port, "POST", MARKS, ANA, GOOD) == (200, jcall(svc.port, "POST", MARKS, ANA, GOOD)[1])
    assert len(MarkLog(store).annotations()) == 1  # the same save twice: one object
    fewer = {"image": PHOTO, "marks": GOOD["marks"][:1]}
    status, doc = jcall(svc.port, "POST", MARKS, BEN, fewer)
    assert status == 201 and doc["annotation"]["after"] == first
    status, view = jcall(svc.port, "GET", MARKS + "?image=" + PHOTO, ANA)
    assert view["versions"] == 2 and view["annotation"]["labeler"] == "ben" and len(view["annotation"]["marks"]) == 1
    assert view["classes"][:3] == ["defect", "dent", "scratch"] and (view["width"], view["height"]) == SIZE
    # "no defect here" on another image is an answer of its own
    status, doc = jcall(svc.port, "POST", MARKS, ANA, {"image": "line/photo-1.png", "no_defect": True})
    assert status == 201 and doc["annotation"]["no_defect"] is True
    marks = MarkLog(store).marks(BATCH)
    assert sorted(zip(marks["image"], marks["kind"])) == [(PHOTO, "point"), ("line/photo-1.png", "none")]
    assert len(store.list("labeling/marks/dents-1/")) == 3  # nothing overwritten, nothing deleted
    status, listing = jcall(svc.port, "GET", "/v1/annotations/batches/dents-1", ANA)
    assert [(i["image"], i["marks"], i["no_defect"]) for i in listing["images"]] == [
        (PHOTO, 1, False), ("line/photo-1.png", 0, True), ("line/photo-2.png", 0, False)]


def test_marks_join_image_labels_and_exports_reimport_to_identical_rows(annotating):
    svc, store, _, inventory = annotating
    digest_before = LabelLog(store).digests()
    assert jcall(svc.port, "POST", MARKS, ANA, GOOD)[0] == 201
    second = {"image": "line/photo-2.png", "marks": [
        {"kind": "box", "label": "scratch", "xmin": 0, "ymin": 0, "xmax": 30, "ymax": 25},
        {"kind": "point", "label": "defect", "x": 239.99, "y": 179.99}]}
    assert jcall(svc.port, "POST", MARKS, BEN, second)[0] == 201
    assert jcall(svc.port, "POST", MARKS, ANA, {"image": "line/photo-1.png", "no_defect": True})[0] == 201
    # the new-labels sensor's digest changes for the batch (so the batch is rebuilt and retrained)
    assert digest_before == {} and set(LabelLog(store).digests()) == {BATCH}

    labels, notes = normalize_batch_labels(inventory, store, page_marks=MarkLog(store).marks(BATCH))
    assert notes == []
    page = labels[labels["source"] == PAGE_SOURCE]
    rows = sorted(map(tuple, page[ROW_COLUMNS].astype(object).where(page[ROW_COLUMNS].notna(), None).values))
    nan = None
    assert rows == sorted([
        (PHOTO, "point", "dent", 40.25, 50.5, nan, nan, nan, nan),
        (PHOTO, "point", "scratch", 200.0, 100.75, nan, nan, nan, nan),
        (PHOTO, "box", "dent", 120.5, 40.0, 100.0, 20.0, 141.0, 60.0),
        ("line/photo-2.png", "box", "scratch", 15.0, 12.5, 0.0, 0.0, 30.0, 25.0),
        ("line/photo-2.png", "point", "defect", 239.99, 179.99, nan, nan, nan, nan),
        ("line/photo-1.png", "none", NO_DEFECT_LABEL, nan, nan, nan, nan, nan, nan)])
    assert set(labels["image_id"]) == set(inventory.loc[inventory["role"] == "image", "sha256"])

    status, headers, csv_bytes = call(svc.port, "GET", "/v1/annotations/batches/dents-1/points.csv", ANA)
    assert status == 200 and headers["content-type"].startswith("text/csv")
    status, _, zipped = call(svc.port, "GET", "/v1/annotations/batches/dents-1/voc.zip", ANA)
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(zipped)) as z:
        xmls = {name: z.read(name).decode() for name in z.namelist()}
    assert sorted(xmls) == ["line/photo-0.xml", "line/photo-1.xml", "line/photo-2.xml"]  # photo-1: verified empty
    assert "<width>240</width>" in xmls["line/photo-0.xml"] and "<depth>1</depth>" in xmls["line/photo-0.xml"]
    status, _, one = call(svc.port, "GET", "/v1/annotations/batches/dents-1/voc?image=" + PHOTO, ANA)
    assert one.decode() == xmls["line/photo-0.xml"]

    # re-import exactly as a batch's label files are read: points.csv at the root, each XML in its folder
    reread = [parse_points_csv(csv_bytes.decode(), "points.csv")]
    reread += [parse_voc_xml(text, name, name.rsplit("/", 1)[0]) for name, text in xmls.items()]
    again = pd.concat(reread, ignore_index=True)
    marked = page[page["kind"].isin(["point", "box"])]

    def canon(df):
        return df[ROW_COLUMNS].sort_values(ROW_COLUMNS).reset_index(drop=True).astype(
            {c: "string" for c in ("image", "kind", "label")})

    pd.testing.assert_frame_equal(canon(again), canon(marked))


def test_exports_of_a_batch_nobody_annotated_are_empty_not_500(annotating):
    svc, store, *_ = annotating
    assert MarkLog(store).annotations() == []
    status, headers, csv_bytes = call(svc.port, "GET", "/v1/annotations/batches/dents-1/points.csv", ANA)
    assert (status, csv_bytes) == (200, b"image,x,y,label\n") and headers["content-type"].startswith("text/csv")
    status, headers, zipped = call(svc.port, "GET", "/v1/annotations/batches/dents-1/voc.zip", ANA)
    assert status == 200 and headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped)) as z:
        assert z.namelist() == []
    status, _, one = call(svc.port, "GET", "/v1/annotations/batches/dents-1/voc?image=" + PHOTO, ANA)
    assert status == 200 and "<width>240</width>" in one.decode() and "<object>" not in one.decode()


def test_marks_give_way_to_the_batchs_own_label_file(annotating, tmp_path):
    svc, store, _, inventory = annotating
    assert jcall(svc.port, "POST", MARKS, ANA, GOOD)[0] == 201
    points = "image,x,y,label\nline/photo-0.png,10,10,dent\n"
    key = "label_files/test/points.csv"
    store.write_bytes(key, points.encode())
    with_file = pd.concat([inventory, pd.DataFrame([{"path": "points.csv", "role": "label_file", "stored_key": key}])],
                          ignore_index=True)
    labels, notes = normalize_batch_labels(with_file, store, page_marks=MarkLog(store).marks(BATCH))
    assert labels[["image", "kind", "x", "y"]].values.tolist() == [[PHOTO, "point", 10.0, 10.0]]
    assert notes == [f"labeling page: the marks of {PHOTO!r} are ignored: a label file of the batch labels it"]
    # once image_labels is built, the view shows the file's marks (not editable) and says the file wins
    points_file = "image,x,y,label\nline/photo-0.png,10,10,rust\n"
    store.write_bytes(key, points_file.encode())
    labels, _ = normalize_batch_labels(with_file, store, page_marks=MarkLog(store).marks(BATCH))
    write_value(store, asset_value_prefix("image_labels", BATCH), labels)
    status, view = jcall(svc.port, "GET", MARKS + "?image=" + PHOTO, ANA)
    assert status == 200 and view["file_labels"] == 1
    assert view["file_marks"] == [{"kind": "point", "label": "rust", "x": 10.0, "y": 10.0, "xmin": None,
                                   "ymin": None, "xmax": None, "ymax": None}]
    assert view["classes"] == ["defect", "dent", "scratch", "rust"]  # the file's class can be drawn too


def test_suggestions_come_from_the_served_model_and_decisions_are_stored(annotating):
    svc, store, versions, inventory = annotating
    path = "/v1/annotations/batches/dents-1/suggestions"
    status, doc = jcall(svc.port, "POST", path, ANA, {"image": PHOTO, "threshold": 0.0})
    assert status == 200 and doc["model_version"] == versions["a"] and doc["window"] == 32
    found = doc["suggestions"]
    assert len(found) >= 3 and all(0 <= s["x"] < SIZE[0] and 0 <= s["y"] < SIZE[1] for s in found)
    assert [s["score"] for s in found] == sorted((s["score"] for s in found), reverse=True)
    # the same centers /v1/inspect locates on the same photo (one sliding-window path)
    photo = store.read_bytes(inventory.loc[inventory["path"] == PHOTO, "stored_key"].iloc[0])
    inspected = DefectClient(svc.url, api_key=API_KEY).inspect(photo, threshold=0.0, heatmap=False)
    assert [(d["x"], d["y"]) for d in inspected["defects"]] == [(s["x"], s["y"]) for s in found]
    decided = [{**found[0], "decision": "accepted"}, {**found[1], "decision": "accepted"},
               {**found[2], "decision": "rejected"}]
    marks = [{"kind": "point", "label": "defect", "x": s["x"], "y": s["y"]} for s in found[:2]]
    status, saved = jcall(svc.port, "POST", MARKS, ANA, {"image": PHOTO, "marks": marks, "suggestions": decided,
                                                          "model_version": doc["model_version"]})
    assert status == 201
    status, got = jcall(svc.port, "GET", "/v1/annotations/batches/dents-1/decisions", ANA)
    assert (got["accepted"], got["rejected"]) == (2, 1) and got["accepted_share"] == pytest.approx(2 / 3)
    assert sorted((d["x"], d["y"], d["decision"], d["model_version"]) for d in got["decisions"]) == sorted(
        (s["x"], s["y"], s["decision"], versions["a"]) for s in decided)


def test_no_defect_here_gives_negative_windows_only():
    from defect_assets.ml.patches import NEGATIVE_LABEL, PatchSpec, cut_image_patches

    img, _ = make_surface_scene(np.random.default_rng(3), *SIZE, defects=0)
    none_row = {"kind": "none", "label": NO_DEFECT_LABEL, "x": np.nan, "y": np.nan}
    cuts = cut_image_patches(img, [none_row], PatchSpec(size=32, negatives_per_clean_image=3),
                             np.random.default_rng(0))
    assert [(c.kind, c.label) for c in cuts] == [("negative", NEGATIVE_LABEL)] * 3
    assert all(16 <= c.x <= SIZE[0] - 16 and 16 <= c.y <= SIZE[1] - 16 for c in cuts)
    assert not is_defect_label(NO_DEFECT_LABEL)


def test_a_name_that_is_no_batch_is_a_404(annotating):
    svc, store, *_ = annotating
    for name in ("a%5Cb", "%00", "x" * 200, "-x", "a b"):
        for method, path, body in [("GET", "", None), ("GET", "/decisions", None), ("POST", "/marks", GOOD),
                                   ("GET", "/points.csv", None), ("GET", "/voc.zip", None),
                                   ("GET", "/marks?image=" + PHOTO, None)]:
            status, doc = jcall(svc.port, method, f"/v1/annotations/batches/{name.replace(' ', '%20')}{path}", ANA,
                                body)
            assert (status, doc.get("error")) == (404, "unknown_batch"), (name, path, doc)
    assert MarkLog(store).annotations() == []
