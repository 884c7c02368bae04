"""The dashboard, in a real browser against the real service: built on an artifact store the
asset graph really wrote (two generated batches ingested, one with a corrupt file; two tiny
models evaluated and crowned one after the other by the evaluation assets behind their
blocking checks; days of prediction log monitored by prediction_monitoring, today's from real
requests). The page loads with every request beyond 127.0.0.1 blocked, and every chart renders
the number of points its source table holds."""

from __future__ import annotations

import datetime as dt
import io
import json
import urllib.error
import urllib.request

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from defect_assets.pipeline.family_registry import families
from defect_assets.pipeline.training import card_summary
from defect_assets.serving.client import DefectClient
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.formats import read_value, write_value
from defect_assets.storage.layout import CHAMPIONS, HISTORY_PARQUET, MONITORING_PARQUET, examples_key
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.helpers.monitoring import monitor, write_day
from defect_assets_tests.helpers.serving import API_KEY, ServiceThread

BATCHES = ["line-1", "line-2"]
PAST_DAYS = ["2026-11-12", "2026-11-13", "2026-11-14"]


def evaluate_as_every_family(root, instance, version: str, min_recall: float):
    """``version`` stored as every family's latest model, then the evaluation assets, the
    champion (behind its blocking checks) and champion_test_predictions, as evaluate_job runs them."""
    from defect_assets.defs.resources import default_resources
    from defect_assets_tests.helpers.deploy import all_assets

    store = LocalObjectStore(root / "data" / "artifacts")
    summary = card_summary(ModelRegistry(store).card(version))
    for family in families():
        write_value(store, f"{family.asset}/__all__", summary)
    selection = [f.evaluation for f in families()] + ["evaluation_history", "champion_model",
                                                           "champion_test_predictions"]
    result = dg.materialize(all_assets(), selection=selection, instance=instance,
                            resources=default_resources(root / "data"),
                            run_config={"ops": {"champion_model": {"config": {"min_defect_recall": min_recall}}}})
    assert result.success and result.output_for_node("champion_model").model_version == version
    assert "champion_test_predictions" in {e.asset_key.to_user_string()
                                           for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from defect_assets.defs.partitions import BATCHES as BATCH_PARTITIONS
    from defect_assets.defs.resources import default_resources
    from defect_assets.ml.synthetic import write_synthetic_surfaces
    from defect_assets.pipeline.tiny import register_tiny_model
    from defect_assets.storage.batches import upload_folder
    from defect_assets.storage.layout import asset_value_prefix
    from defect_assets_tests.helpers.model_assets import BATCH_ASSETS, TINY

    root = tmp_path_factory.mktemp("dashboard")
    instance = dg.DagsterInstance.ephemeral()
    landing = LocalObjectStore(root / "data" / "landing")
    for i, b in enumerate(BATCHES):
        write_synthetic_surfaces(root / b, n_images=10, seed=60 + i, width=256, height=192, defects_per_image=(2, 3))
        if b == "line-2":  # a corrupt file: ingestion lists it as rejected
            (root / b / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
        upload_folder(root / b, landing, b)
    instance.add_dynamic_partitions(BATCH_PARTITIONS, BATCHES)
    cfg = {"ops": {k: v for k, v in TINY["ops"].items() if k in ("labeled_patches", "backbone_features")}}
    for b in BATCHES:
        assert dg.materialize(BATCH_ASSETS, partition_key=b, instance=instance, resources=default_resources(
            root / "data"), run_config=cfg).success
    store = LocalObjectStore(root / "data" / "artifacts")
    registry = ModelRegistry(store)
    patches = {b: read_value(store, asset_value_prefix("labeled_patches", b)) for b in BATCHES}
    untrained = register_tiny_model(registry, patches, seed=1, train=False).version
    trained = register_tiny_model(registry, patches, epochs=4, seed=0).version
    evaluate_as_every_family(root, instance, untrained, min_recall=0.0)  # the previous champion
    evaluate_as_every_family(root, instance, trained, min_recall=0.0)  # the current one
    registry.promote(trained, threshold=0.5)

    # three past days of production scores (the last one shifted), then today's real requests
    rng = np.random.default_rng(8)
    reference = pd.read_parquet(store.local_path(f"champion/{trained}/test_predictions.parquet"))["defect_score"]
    for day, shift in zip(PAST_DAYS, (0.0, 0.0, 0.3)):
        write_day(store, day, np.clip(rng.choice(reference.to_numpy(), 240) + shift, 0, 1), version=trained)
    images = [png_bytes(smooth_image(40, 40, seed=s)) for s in range(12)]
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, prediction_log_flush_seconds=0.2)) as svc:
        svc.wait_ready(trained)
        for k in range(0, 12, 3):
            DefectClient(svc.url).predict(images[k:k + 3])
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    monitor(store, [*PAST_DAYS, today], min_images=200)
    return root, store, registry, {"trained": trained, "untrained": untrained, "today": today}


@pytest.fixture
def service(built):
    _, store, _, versions = built
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, prediction_log=False)) as svc:
        svc.wait_ready(versions["trained"])
        yield svc


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def expected(store: LocalObjectStore, versions: dict) -> dict:
    """What every chart should hold, computed from the stored tables (not from the page's API)."""
    history = pd.read_parquet(store.local_path(HISTORY_PARQUET))
    champions = json.loads(store.read_bytes(CHAMPIONS))["champions"]
    reports = {}
    for which, entry in (("current", champions[-1]), ("previous", champions[-2])):
        row = history[history["evaluation_id"] == entry["evaluation_id"]].iloc[0]
        reports[which] = json.loads(store.read_bytes(row["report_json"]))
    monitoring = pd.read_parquet(store.local_path(MONITORING_PARQUET))
    monitoring = monitoring[monitoring["images"] > 0]
    examples = json.loads(store.read_bytes(examples_key(versions["trained"])))
    return {"history": history, "reports": reports, "monitoring": monitoring, "examples": examples,
            "champions": champions}


def test_the_summary_api_matches_the_stored_tables(built, service):
    _, store, _, versions = built
    want = expected(store, versions)
    status, body, _ = get(f"{service.url}/dashboard/api/summary")
    assert status == 200
    doc = json.loads(body)
    q = doc["quality"]["rows"]
    assert len(q) == len(want["history"]) == 2 * len(families())  # two rounds of every family
    for row in q:
        n, correct = row["test_patches"], row["accuracy"] * row["test_patches"]
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
        defects = row["test_defects"]
        assert row["majority_baseline"] == pytest.approx(max(defects, n - defects) / n)
        assert row["accuracy_high"] - row["accuracy_low"] < 1 and correct == pytest.approx(round(correct))
    cur, prev = doc["champions"]["current"], doc["champions"]["previous"]
    assert (cur["model_version"], prev["model_version"]) == (versions["trained"], versions["untrained"])
    assert cur["confusion_matrix"] == want["reports"]["current"]["confusion_matrix"]
    assert cur["roc_curves"]["defect vs ok"] == want["reports"]["current"]["roc_curve"]
    batches = {r["batch"]: r for r in doc["batches"]["rows"]}
    assert set(batches) == set(BATCHES), batches
    # every generated batch carries a SYNTHETIC.txt marker (not an image); line-2 also the corrupt PNG
    assert (batches["line-1"]["rejected"], batches["line-2"]["rejected"]) == (1, 2), batches
    assert all(r["images"] == 10 and r["defect_patches"] + r["ok_patches"] == r["patches"] for r in batches.values())
    days = [r["day"] for r in doc["monitoring"]["rows"]]
    assert days == [*PAST_DAYS, versions["today"]]
    today = doc["monitoring"]["rows"][-1]
    assert (today["requests"], today["images"], today["psi"]) == (4, 12, None)  # 4 real requests of 3 images
    # the first request after the model load is the warm-up: reported apart, not in the percentiles
    from defect_assets.storage.prediction_log import read_day

    logged = read_day(store, versions["today"]).records.groupby("request_id", sort=False)[["latency_ms", "warmup"]]
    logged = logged.first()
    assert logged["warmup"].tolist() == [True, False, False, False] and today["warmup_requests"] == 1
    assert today["latency_ms_warmup"] == pytest.approx(logged["latency_ms"].iloc[0])
    assert today["latency_ms_p50"] == pytest.approx(np.percentile(logged["latency_ms"].iloc[1:], 50))
    assert today["latency_ms_p99"] == pytest.approx(np.percentile(logged["latency_ms"].iloc[1:], 99))
    assert doc["monitoring"]["empty"] == {}  # three days have a PSI
    assert [r["drift_warning"] for r in doc["monitoring"]["rows"]] == [False, False, True, False]
    assert doc["active_learning"] is None and "active_learning" in doc["notes"]
    ex = doc["mistakes"]
    assert [e["patch_id"] for e in ex["misses"]] == [e["patch_id"] for e in want["examples"]["misses"]]
    # the files behind the charts
    status, csv, headers = get(f"{service.url}/dashboard/files/evaluation_history.csv")
    assert status == 200 and "attachment" in headers["content-disposition"]
    assert len(pd.read_csv(io.BytesIO(csv))) == 2 * len(families())
    status, parquet, _ = get(f"{service.url}/dashboard/files/prediction_monitoring.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(parquet)),
                                  pd.read_parquet(store.local_path(MONITORING_PARQUET)))
    status, csv, _ = get(f"{service.url}{ex['downloads']['csv']}")
    assert status == 200 and len(pd.read_csv(io.BytesIO(csv))) == ex["test_patches"]
    for bad in ("/dashboard/files/..%2Fmodels%2Fproduction.json", "/dashboard/examples/x/..%2F..%2Fcard.json",
                "/dashboard/files/test_predictions/nope.csv", "/dashboard/static/secret.py"):
        assert get(f"{service.url}{bad}")[0] == 404, bad
    status, js, headers = get(f"{service.url}/dashboard/static/plotly.min.js", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip" and len(js) > 500_000


def test_the_dashboard_asks_for_the_key_when_one_is_set(built):
    import base64

    _, store, _, versions = built
    settings = ServiceSettings(store=store, api_key=API_KEY, prediction_log=False)
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["trained"])
        status, _, headers = get(f"{svc.url}/dashboard")
        assert status == 401 and headers["www-authenticate"].startswith("Basic ")
        assert get(f"{svc.url}/dashboard/api/summary")[0] == 401
        basic = "Basic " + base64.b64encode(f"analyst:{API_KEY}".encode()).decode()
        assert get(f"{svc.url}/dashboard", {"Authorization": basic})[0] == 200
        assert get(f"{svc.url}/dashboard/api/summary", {"X-API-Key": API_KEY})[0] == 200
        wrong = "Basic " + base64.b64encode(b"analyst:nope").decode()
        assert get(f"{svc.url}/dashboard/api/summary", {"Authorization": wrong})[0] == 401
    with ServiceThread(settings.with_(dashboard_requires_key=False)) as svc:
        assert get(f"{svc.url}/dashboard/api/summary")[0] == 200  # opened on purpose
        assert get(f"{svc.url}/v1/model")[0] == 401  # the rest stays protected


def test_active_learning_progress_appears_once_its_table_exists(built, service):
    _, store, _, _ = built
    from defect_assets.storage.layout import ACTIVE_LEARNING_PROGRESS

    store.write_bytes(ACTIVE_LEARNING_PROGRESS, b"round,labeled,roc_auc\n0,40,0.71\n1,60,0.78\n2,80,0.8\n")
    try:
        doc = json.loads(get(f"{service.url}/dashboard/api/summary")[1])
        assert doc["active_learning"]["x"] == "round" and len(doc["active_learning"]["rows"]) == 3
        assert "active_learning" not in doc["notes"]
        # counts and rates are drawn apart (two axes); both have values here
        al = doc["active_learning"]
        assert (al["counts"], al["rates"], al["empty"]) == (["labeled"], ["roc_auc"], {})
    finally:
        store.delete(ACTIVE_LEARNING_PROGRESS)


EMPTY_OR_DRAWN = """() => Array.from(document.querySelectorAll('.chart'))
  .filter(c => c.getClientRects().length > 0)
  .filter(c => !(Number(c.dataset.points) > 0 || (c.dataset.empty && c.innerText.includes(c.dataset.empty))))
  .map(c => c.id)"""
"""Charts on screen that neither drew points nor say why not (should be none)."""

POINTS = """(id) => {
  const div = document.getElementById(id);
  return {scatter: div.querySelectorAll('.scatterlayer path.point').length,
          bars: div.querySelectorAll('.barlayer .point').length,
          annotations: Array.from(div.querySelectorAll('.annotation-text')).map(e => e.textContent),
          declared: Number(div.dataset.points || -1)};
}"""


@pytest.mark.slow
def test_the_dashboard_in_a_browser_offline(built, service, offline_page):
    _, store, _, versions = built
    want = expected(store, versions)
    page = offline_page.page
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    response = page.goto(f"{service.url}/dashboard")
    assert response.status == 200
    page.wait_for_selector("body[data-ready='yes']", timeout=60_000)
    assert offline_page.blocked == [] and errors == []

    def points(chart: str) -> dict:
        return page.evaluate(POINTS, chart)

    history, reports, monitoring = want["history"], want["reports"], want["monitoring"]
    # model quality: one marker per evaluation, and the majority baseline beside each
    acc = points("chart-quality-accuracy")
    assert acc["scatter"] == 2 * len(history) == acc["declared"]
    assert points("chart-quality-auc")["scatter"] == len(history)
    # the champions' ROC curves and confusion matrices
    for which in ("current", "previous"):
        roc = points(f"chart-roc-{which}")
        assert roc["scatter"] == len(reports[which]["roc_curve"]["x"]) == roc["declared"]
        cm = points(f"chart-cm-{which}")
        assert cm["annotations"] == [str(v) for row in reports[which]["confusion_matrix"] for v in row]
    # data per batch: two series of one bar per batch in each chart
    assert points("chart-batches-images")["bars"] == 2 * len(BATCHES)
    assert points("chart-batches-balance")["bars"] == 2 * len(BATCHES)
    # monitoring: one point per monitored day (PSI only where there were enough images)
    days = len(monitoring)
    assert points("chart-monitoring-volume")["bars"] == days == 4
    # p50, p95 and p99 of /v1/predict per day, and today's warm-up request marked apart
    assert points("chart-monitoring-latency")["scatter"] == 3 * days + 1
    assert points("chart-monitoring-defects")["scatter"] == days
    assert points("chart-monitoring-drift")["scatter"] == int(monitoring["psi"].notna().sum()) == 3
    # the champion's mistakes: every picture and heatmap loaded
    shown = len(want["examples"]["misses"]) + len(want["examples"]["false_alarms"])
    loaded = page.evaluate("""() => Array.from(document.querySelectorAll('.gallery img'))
                                .filter(i => i.complete && i.naturalWidth > 0).length""")
    assert shown > 0 and loaded == 2 * shown
    # a table behind every chart
    rows = page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('.table'))
        .filter(t => t.id).map(t => [t.id, t.querySelectorAll('tbody tr').length]))""")
    assert rows == {"table-quality": len(history), "table-batches": len(BATCHES), "table-monitoring": days,
                    "table-active-learning": 0, "table-mistakes": shown,
                    "table-label-issues": 0, "table-labelers": 0}
    assert page.locator("#table-monitoring tr.warn").count() == 1  # the shifted day
    assert "no labeling rounds recorded yet" in page.inner_text("#active-learning")
    # a missing source: its charts are not drawn at all; every chart shown has points or says why
    assert page.evaluate("""() => Array.from(document.querySelectorAll('#active-learning .chart'))
                            .map(c => c.getClientRects().length)""") == [0, 0]
    assert page.evaluate(EMPTY_OR_DRAWN) == []
    # the two label-quality sections are empty here, and say what would fill them
    assert "materialize label_issues" in page.inner_text("#label-issues")
    assert "no labels from the labeling page yet" in page.inner_text("#labelers")
    page.evaluate("document.querySelector('#table-quality details').open = true")
    path = offline_page.screenshot("dashboard")
    assert path.stat().st_size > 50_000
    assert offline_page.blocked == []


CHART = """(id) => {
  const div = document.getElementById(id);
  return {traces: (div.data || []).map(t => ({name: t.name, x: t.x, y: t.y})),
          xaxis: div.layout ? {dtick: div.layout.xaxis.dtick, range: div.layout.xaxis.range} : null,
          ticks: Array.from(div.querySelectorAll('.xtick text')).map(t => t.textContent),
          empty: div.dataset.empty || null, text: div.innerText, shown: div.getClientRects().length > 0};
}"""


@pytest.mark.slow
def test_one_round_on_integer_axes_empty_charts_say_why_and_latency_without_the_warm_up(tmp_path, offline_page):
    """A young project: one labeling round (published before any label; three labels given on the
    page since, one of them on the review queue, and one more undone), one monitored day of a
    hand-made log (a 5.1 s warm-up request, five predict requests of 40-48 ms, one 3.8 s inspect),
    no evaluation yet. The round sits on an integer axis; counts and rates are on separate charts;
    the label counts are those given, before any relabel run; a chart with nothing to draw says why
    and what would fill it; latency percentiles leave the warm-up out and show it apart."""
    from defect_assets.pipeline.active_learning import PROGRESS_COLUMNS
    from defect_assets.pipeline.monitoring import MonitoringSettings, monitor_day
    from defect_assets.storage.labeling import REVIEW_QUEUE, LabelEvent, LabelLog
    from defect_assets.storage.layout import ACTIVE_LEARNING_PROGRESS
    from defect_assets_tests.helpers.monitoring import VERSION, write_reference, write_timed_requests
    from defect_assets_tests.helpers.serving import model_registry

    store, registry, versions = model_registry(tmp_path)
    registry.promote(versions["a"], threshold=0.5)
    write_reference(store)
    write_timed_requests(store, "2026-11-20")  # 12 images scored by /v1/predict: below min_images (200)
    monitor_day(store, "2026-11-20", MonitoringSettings())
    row = dict.fromkeys(PROGRESS_COLUMNS, "") | {"round": 0, "published": "2026-11-20T08:00:00+00:00",
                                                  "queue": "q-0", "model_version": versions["a"],
                                                  "strategy": "entropy", "pool_images": 30, "queued": 5,
                                                  "page_labels": 0}
    store.write_bytes(ACTIVE_LEARNING_PROGRESS, pd.DataFrame([row], columns=PROGRESS_COLUMNS).to_csv(index=False)
                      .encode())
    log = LabelLog(store)

    def label(queue: str, item: str, answer: str = "defect", **kw) -> LabelEvent:
        e = LabelEvent(kind="label", queue=queue, item=item, batch="b1", image=f"{item}.png", image_id="ab" * 32,
                       labeler="ana", model_version=versions["a"], label=answer, **kw)
        return log.append(e)[0]

    label("q-0", "i1")
    label("q-0", "i2", "ok")
    undone = label("q-0", "i3")
    log.append(LabelEvent(kind="undo", queue="q-0", item="i3", batch="b1", image="i3.png", image_id="ab" * 32,
                          labeler="ana", model_version=versions["a"], target=undone.id))
    label(REVIEW_QUEUE, "r1", "ok")
    assert len(log.labels()) == 3

    page = offline_page.page
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, prediction_log=False)) as svc:
        svc.wait_ready(versions["a"])
        doc = json.loads(get(f"{svc.url}/dashboard/api/summary")[1])
        page.goto(f"{svc.url}/dashboard")
        page.wait_for_selector("body[data-ready='yes']", timeout=60_000)
        counts, rates = page.evaluate(CHART, "chart-active-learning-counts"), page.evaluate(
            CHART, "chart-active-learning-rates")
        latency, drift = page.evaluate(CHART, "chart-monitoring-latency"), page.evaluate(
            CHART, "chart-monitoring-drift")
        info = page.inner_text("#active-learning-info")
        undrawn = page.evaluate(EMPTY_OR_DRAWN)
        hidden = page.evaluate("""() => Array.from(document.querySelectorAll('.chart'))
                                  .filter(c => c.getClientRects().length === 0).map(c => c.id)""")
        page.locator("#active-learning").scroll_into_view_if_needed()
        offline_page.screenshot("dashboard-young-project")
    assert offline_page.blocked == []

    # one round: at x = 0 on an axis of whole rounds, not in the middle of -1..1
    al = doc["active_learning"]
    assert (al["counts"], al["rates"]) == (["pool_images", "queued", "page_labels", "labels_given"],
                                           ["test_accuracy", "test_roc_auc"])
    assert counts["shown"] and counts["xaxis"] == {"dtick": 1, "range": [-0.5, 0.5]} and counts["ticks"] == ["0"]
    assert all(t["x"] == [0] for t in counts["traces"])
    # the labels given on the page, read from the label store (none were there when the round was published)
    by_name = {t["name"]: t["y"] for t in counts["traces"]}
    assert by_name["labels given on this round's queue (now)"] == [2]  # i1, i2 (i3 was undone)
    assert by_name["labels on the page when published"] == [0] and al["page_labels_now"] == 3
    assert info.startswith("3 label(s) given on the labeling page so far")
    # rates have no values here: the chart says why and what would fill it
    assert rates["shown"] and "no test metrics" in rates["empty"] and "deploy_job" in rates["text"]
    # PSI: too few images that day; the minimum and the day's count are named
    assert drift["shown"] and "at least 200 images scored by /v1/predict" in drift["text"]
    assert "the busiest day here had 12" in drift["text"]
    # latency: the five predict requests alone, the warm-up and inspect apart (exact, by hand)
    lines = {t["name"]: t["y"] for t in latency["traces"]}
    assert lines["predict p50"] == [44] and lines["predict p95"] == [pytest.approx(47.6)]
    assert lines["predict p99"] == [pytest.approx(47.92)]
    assert lines["warm-up: first request after a model load"] == [5100] and lines["inspect p50"] == [3800]
    [day] = doc["monitoring"]["rows"]
    assert (day["requests"], day["warmup_requests"], day["inspect_requests"]) == (7, 1, 1)
    # no evaluation, champion or batch yet: those sections' charts are not drawn, their notes say why
    assert set(hidden) == {"chart-quality-accuracy", "chart-quality-auc", "chart-roc-current", "chart-cm-current",
                           "chart-roc-previous", "chart-cm-previous", "chart-batches-images",
                           "chart-batches-balance"}
    assert set(doc["notes"]) >= {"quality", "champions", "batches"} and undrawn == []
    assert VERSION == day["model_version"]
