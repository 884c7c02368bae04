"""Prediction monitoring: the PSI by hand, a shifted score sample warns and an unshifted one does
not (in the asset's check, on days of real prediction-log segments), the BI tables, the daily
schedule's partition, and the champion's test predictions with its worst mistakes as pictures."""

from __future__ import annotations

import datetime as dt
import io
import json
import math

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from defect_assets.ml.drift import population_stability_index
from defect_assets.pipeline.monitoring import MONITORING_COLUMNS
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.layout import MONITORING_CSV, MONITORING_PARQUET
from defect_assets_tests.helpers.monitoring import REFERENCE, VERSION, monitor, write_day, write_reference


def test_psi_by_hand_and_its_chance_level():
    ref = np.arange(10) / 10 + 0.05  # 0.05 .. 0.95: the median splits it in halves
    r = population_stability_index(ref, [0.9, 0.9, 0.9, 0.9], bins=2)
    assert r.edges == [0.5] and r.reference_share == [0.5, 0.5] and r.current_share == [1e-4, 1.0]
    assert r.psi == pytest.approx((1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1 - 0.5) * math.log(1 / 0.5))
    same = population_stability_index(ref, ref, bins=5)
    assert same.psi == pytest.approx(0.0, abs=1e-12) and same.bins == 5
    assert same.chance_level == pytest.approx(4 * (1 / 10 + 1 / 10))
    with pytest.raises(ValueError, match="both sides"):
        population_stability_index(ref, [])


def test_a_shifted_score_sample_passes_the_warning_level_and_an_unshifted_one_does_not():
    rng = np.random.default_rng(3)
    unshifted = rng.beta(2, 5, 400)  # another sample of the same distribution
    shifted = np.clip(rng.beta(2, 5, 400) + 0.15, 0, 1)  # every score 0.15 higher
    calm, drift = population_stability_index(REFERENCE, unshifted), population_stability_index(REFERENCE, shifted)
    assert calm.psi < 0.1 < 0.25 < drift.psi
    assert calm.psi < 2 * calm.chance_level  # what chance alone gives at these sizes


@pytest.mark.slow
def test_monitoring_days_drift_check_and_bi_tables(tmp_path):
    store = LocalObjectStore(tmp_path / "artifacts")
    write_reference(store)
    rng = np.random.default_rng(5)
    calm = write_day(store, "2026-11-12", rng.beta(2, 5, 400))
    shifted = write_day(store, "2026-11-13", np.clip(rng.beta(2, 5, 400) + 0.15, 0, 1))
    write_day(store, "2026-11-14", rng.beta(2, 5, 30))  # a quiet day: too few images to judge
    write_day(store, "2026-11-14", rng.beta(2, 5, 250), version="model-without-reference")
    results = monitor(store, ["2026-11-12", "2026-11-13", "2026-11-14", "2026-11-15"])

    rows, check, meta = results["2026-11-12"]
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
    [row] = rows.to_dict("records")
    assert row["requests"] == 200 and row["images"] == 400 and row["drift_images"] == 400
    assert row["defect_share"] == pytest.approx(np.mean([r["is_defect"] for r in calm]))
    latencies = [20.0 + k % 50 for k in range(200)]  # one per request
    assert row["latency_ms_p50"] == pytest.approx(np.percentile(latencies, 50))
    assert row["latency_ms_p99"] == pytest.approx(np.percentile(latencies, 99))
    want = population_stability_index(REFERENCE, [r["defect_score"] for r in calm]).psi
    assert row["psi"] == pytest.approx(want) and row["psi"] < 0.25 and not row["drift_warning"]
    assert "plot_latency" in meta and f"plot_drift_{VERSION}" in meta  # plots in the UI

    rows, check, _ = results["2026-11-13"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert rows["psi"].iloc[0] > 0.25 and bool(rows["drift_warning"].iloc[0])
    assert f"{VERSION}: PSI" in check.description and check.metadata["max_psi"].value > 0.25
    assert population_stability_index(REFERENCE, [r["defect_score"] for r in shifted]).psi == \
        pytest.approx(rows["psi"].iloc[0])

    rows, check, meta = results["2026-11-14"]
    assert check.passed and set(rows["model_version"]) == {VERSION, "model-without-reference"}
    assert rows["psi"].isna().all() and rows["images"].tolist() == [250, 30]  # sorted by model version
    assert "fewer than min_images=200" in meta["notes"].value and "no test-split scores" in meta["notes"].value

    rows, check, _ = results["2026-11-15"]  # nothing logged: one row of zeros
    assert check.passed and rows["requests"].tolist() == [0] and rows["images"].tolist() == [0]

    # the tables a BI tool reads: one row per day and model, Parquet and CSV alike
    table = pd.read_parquet(store.local_path(MONITORING_PARQUET))
    csv = pd.read_csv(store.local_path(MONITORING_CSV))
    assert list(table.columns) == list(csv.columns) == MONITORING_COLUMNS
    assert table["day"].tolist() == ["2026-11-12", "2026-11-13", "2026-11-14", "2026-11-14", "2026-11-15"]
    np.testing.assert_allclose(csv["psi"].to_numpy(float), table["psi"].to_numpy(float), equal_nan=True)
    assert csv["drift_warning"].tolist() == [False, True, False, False, False]

    # a second run of one day replaces that day's rows, and a lower level makes the calm day warn
    again = monitor(store, ["2026-11-12"], warn_psi=0.01)
    assert not again["2026-11-12"][1].passed
    table = pd.read_parquet(store.local_path(MONITORING_PARQUET))
    assert len(table) == 5 and table.loc[table["day"] == "2026-11-12", "drift_level"].tolist() == [0.01]


def test_a_run_tagged_with_a_day_outside_the_partitions_fails_clearly(tmp_path):
    """A run launched with the partition tag 2099-01-01 (as a GraphQL client can) fails with the
    reason and writes no row."""
    from defect_assets.defs.io_manager import ArtifactIOManager
    from defect_assets.defs.monitoring.assets import prediction_monitoring
    from defect_assets.defs.resources import LocalStorage

    store = LocalObjectStore(tmp_path / "artifacts")
    artifacts = LocalStorage(root=store.url)
    job = dg.define_asset_job("monitor_any_day", selection=[prediction_monitoring])
    defs = dg.Definitions(assets=[prediction_monitoring], jobs=[job],
                          resources={"artifact_store": artifacts, "io_manager": ArtifactIOManager(store=artifacts)})
    for day in ("2099-01-01", "2030-06-01", "2026-10-31"):  # far ahead, ahead, before the first day
        result = defs.resolve_job_def("monitor_any_day").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), tags={"dagster/partition": day}, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
        assert f"partition '{day}' is not a day of the daily partitions" in failure.message, failure.message
    assert not store.exists(MONITORING_PARQUET) and not store.exists(MONITORING_CSV)


def test_daily_schedule_asks_for_the_day_that_just_ended():
    from defect_assets.definitions import build_defs
    from defect_assets.defs.automation.schedules import daily_monitoring_schedule

    defs = build_defs()

    ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 20, 0, 15, tzinfo=dt.UTC))
    request = daily_monitoring_schedule(ctx)
    assert request.partition_key == "2026-11-19" and request.run_key == "monitoring-2026-11-19"
    assert defs.resolve_schedule_def("daily_monitoring_schedule").job_name == "monitoring_job"
    job = defs.resolve_job_def("monitoring_job")
    assert [k.to_user_string() for k in job.asset_layer.selected_asset_keys] == ["prediction_monitoring"]


# --- the champion on the test split, and its worst mistakes ---

@pytest.mark.slow
def test_champion_test_predictions_table_pictures_and_champions_record(tmp_path):
    from defect_assets.ml.scorer import load_registered
    from defect_assets.pipeline.champion import Champion
    from defect_assets.pipeline.mistakes import champion_test_predictions, reference_scores
    from defect_assets.pipeline.training import split_data
    from defect_assets.storage.formats import read_value
    from defect_assets.storage.layout import CHAMPIONS
    from defect_assets_tests.helpers.serving import model_registry

    store, registry, versions = model_registry(tmp_path)
    patches = {"synthetic": read_value(store, "labeled_patches/synthetic")}
    test = split_data(patches, "test", "binary", ["ok", "defect"])
    # the untrained model: it makes mistakes of both kinds at its median score
    want = load_registered(registry, versions["b"]).predict_proba(test.x)[:, 1]
    threshold = float(np.median(want))
    champion = Champion(model_version=versions["b"], family="tiny_cnn", metric="roc_auc", validation_value=0.5,
                        threshold=threshold, evaluation_id="eval-b", report_html="b.html", test_metrics={},
                        min_defect_recall=0.5, margin=0.0)
    result = champion_test_predictions(champion, registry, patches, store, per_kind=3)
    table = result.table
    assert len(table) == len(test.y) and table["patch_id"].tolist() == test.table["patch_id"].tolist()
    np.testing.assert_allclose(table["defect_score"], want, atol=1e-6)
    assert (table["predicted_defect"] == (want >= threshold)).all()
    assert (table["correct"] == (table["predicted_defect"] == test.y.astype(bool))).all()
    np.testing.assert_allclose(reference_scores(store, versions["b"]), want, atol=1e-6)

    doc = result.examples
    misses = table[table["is_defect"] & ~table["predicted_defect"]]
    alarms = table[~table["is_defect"] & table["predicted_defect"]]
    assert doc["counts"] == {"misses": len(misses), "false_alarms": len(alarms)}
    assert len(misses) > 0 and len(alarms) > 0
    want_misses = misses.sort_values("defect_score")["patch_id"].head(3).tolist()
    want_alarms = alarms.sort_values("defect_score", ascending=False)["patch_id"].head(3).tolist()
    assert [e["patch_id"] for e in doc["misses"]] == want_misses
    assert [e["patch_id"] for e in doc["false_alarms"]] == want_alarms
    size = test.x.shape[1]
    for ex in doc["misses"] + doc["false_alarms"]:
        picture = np.asarray(Image.open(io.BytesIO(store.read_bytes(ex["picture"]))))
        heat = np.asarray(Image.open(io.BytesIO(store.read_bytes(ex["heatmap"]))))
        assert picture.shape[:2] == heat.shape[:2] == (3 * size, 3 * size) and heat.shape[2] == 3
        row = table.set_index("patch_id").loc[ex["patch_id"]]
        np.testing.assert_array_equal(picture[::3, ::3], test.x[table.index[table["patch_id"] == ex["patch_id"]][0]]
                                      .reshape(size, size))
        assert ex["defect_score"] == pytest.approx(row["defect_score"])
    # champions.json: appended once per model version, in order
    champion_test_predictions(champion, registry, patches, store, per_kind=1)
    a = Champion(**{**champion.to_dict(), "model_version": versions["a"], "evaluation_id": "eval-a"})
    champion_test_predictions(a, registry, patches, store, per_kind=1)
    assert [c["model_version"] for c in json.loads(store.read_bytes(CHAMPIONS))["champions"]] == \
        [versions["b"], versions["a"]]


def test_latency_percentiles_leave_out_the_warm_up_request_and_inspect_has_its_own(tmp_path):
    """A hand-made day: the first request after a model load took 5.1 s, five /v1/predict requests
    40-48 ms, one /v1/inspect 3.8 s. The predict percentiles are those of the five alone (with the
    warm-up in them, p95 and p99 would be seconds beside a 45 ms median); the warm-up and inspect
    are reported apart. A record written before the warmup field existed reads as no warm-up."""
    from defect_assets.pipeline.monitoring import MonitoringSettings, monitor_day, read_daily_tables
    from defect_assets.storage.layout import monitoring_day_key
    from defect_assets.storage.prediction_log import encode_segment, read_day
    from defect_assets_tests.helpers.monitoring import write_timed_requests

    store = LocalObjectStore(tmp_path / "artifacts")
    write_reference(store)
    write_timed_requests(store, "2026-11-20")
    [row] = monitor_day(store, "2026-11-20", MonitoringSettings(min_images=10)).rows.to_dict("records")
    assert (row["requests"], row["images"], row["warmup_requests"], row["inspect_requests"]) == (7, 14, 1, 1)
    assert row["latency_ms_p50"] == 44.0  # of 40, 42, 44, 46, 48
    assert row["latency_ms_p95"] == pytest.approx(47.6) and row["latency_ms_p99"] == pytest.approx(47.92)
    assert row["latency_ms_warmup"] == 5100.0
    assert row["inspect_latency_ms_p50"] == row["inspect_latency_ms_p95"] == 3800.0
    assert row["drift_images"] == 12 and row["psi_min_images"] == 10 and not math.isnan(row["psi"])

    # a segment of the old format (no warmup field): its request is an ordinary one
    old = {"record_id": "r-old", "time": "2026-11-21T08:00:00.000000+00:00", "request_id": "old-1",
           "route": "predict", "model_version": VERSION, "sha256": "0" * 64, "scores": {"ok": 1.0, "defect": 0.0},
           "decision": "ok", "is_defect": False, "defect_score": 0.0, "latency_ms": 30.0}
    store.write_bytes("prediction_log/day=2026-11-21/old-format.jsonl", encode_segment([old]))
    assert read_day(store, "2026-11-21").records["warmup"].tolist() == [False]
    [row] = monitor_day(store, "2026-11-21").rows.to_dict("records")
    assert (row["warmup_requests"], row["latency_ms_p50"], row["psi_min_images"]) == (0, 30.0, 200)
    assert math.isnan(row["latency_ms_warmup"])

    # a daily table written before the new columns existed still joins the combined table (empty there)
    legacy = pd.read_parquet(store.local_path(monitoring_day_key("2026-11-21"))).drop(
        columns=["warmup_requests", "latency_ms_warmup", "psi_min_images"])
    with store.open_write(monitoring_day_key("2026-11-21")) as f:
        legacy.to_parquet(f, index=False)
    table = read_daily_tables(store)
    assert list(table.columns) == MONITORING_COLUMNS and table["day"].tolist() == ["2026-11-20", "2026-11-21"]
    assert table["warmup_requests"].tolist()[0] == 1 and pd.isna(table["warmup_requests"].tolist()[1])
