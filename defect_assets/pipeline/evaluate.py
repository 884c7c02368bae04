"""Evaluating a registered model on the held-out test split (threshold from validation), with
the report written as JSON and self-contained HTML, and one history row per evaluation."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defect_assets.ml import plots
from defect_assets.ml.evaluation import binary_report, choose_threshold, multiclass_report
from defect_assets.ml.records import EvaluationReport
from defect_assets.ml.report_html import render_report
from defect_assets.ml.scorer import Scorer, load_registered
from defect_assets.pipeline.training import data_version, split_data
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.layout import HISTORY_CSV, HISTORY_PARQUET  # noqa: F401 - importable from here too
from defect_assets.storage.registry import ModelRegistry

# The evaluation history's columns, in order (documented in docs/bi.md for BI tools).
HISTORY_COLUMNS = [
    "evaluation_id", "evaluated_at", "model_family", "model_version", "task", "data_version", "batches",
    "trained_on_data_version", "threshold_method", "threshold", "test_patches", "test_defects",
    "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc",
    "tn", "fp", "fn", "tp", "report_json", "report_html",
    # added with issue 10 (appended at the end: older files gain empty values, see append_history)
    "majority_baseline", "accuracy_ci_low", "accuracy_ci_high", "roc_auc_ci_low", "roc_auc_ci_high",
    # added with issue 18: one full-size image at one client, through the served (compiled) scorer
    "latency_p50_ms", "latency_p99_ms",
    # added with issue 25: long format, one more row per group of a named grouping (overall rows: empty)
    "grouping", "group", "recall_ci_low", "recall_ci_high",
]
LATENCY_RUNS = 200


@dataclass(frozen=True)
class EvalSettings:
    threshold_method: str = "max_f1"
    cost_missed_defect: float = 5.0
    cost_false_alarm: float = 1.0
    groupings: tuple[str, ...] = ()
    """Columns of the test patches' table (``batch``, ``group``, a label file's categorical column)
    to break the figures down by (``ml.groups.group_metrics``); none by default."""


def measure_latency(scorer: Scorer, image: bytes, runs: int = LATENCY_RUNS) -> dict[str, float]:
    """Milliseconds to score one encoded full-size image through ``scorer`` (decode, the shared
    preprocessing, every test-time view, the model), one call at a time after two warm-up calls:
    what one client of the service waits for, less HTTP. On this machine, as it is now."""
    import time

    for _ in range(2):
        scorer.predict_images([image])
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        scorer.predict_images([image])
        times.append((time.perf_counter() - t0) * 1000)
    return {"latency_p50_ms": float(np.percentile(times, 50)), "latency_p99_ms": float(np.percentile(times, 99)),
            "latency_runs": len(times)}


def candidate_latency(registry: ModelRegistry, version: str, patch_sets: dict[str, ArrayTable],
                      store: ObjectStore, runs: int = LATENCY_RUNS) -> dict[str, float]:
    """``measure_latency`` of the registered model as the service loads it (compiled), on the
    first golden patch's full-size source image (what a client would upload)."""
    from defect_assets.pipeline.golden import golden_set

    served = load_registered(registry, version, compiled=True)
    golden = golden_set(served.card, patch_sets, store)
    if not len(golden):
        return {"latency_p50_ms": float("nan"), "latency_p99_ms": float("nan"), "latency_runs": 0}
    return measure_latency(served, golden.upload_bytes()[0], runs)


def binary_threshold(card, y_val: np.ndarray, p_val: np.ndarray, settings: EvalSettings) -> tuple[float, str]:
    """(threshold, the rule that chose it). With defects in validation: ``settings.threshold_method``,
    as for every family. With none, a model trained on good images only (its settings name a
    ``threshold_quantile``, e.g. the anomaly family) takes that quantile of the good validation
    probabilities (rule ``good_quantile(q)``); any other model refuses (``ThresholdError``)."""
    y_val = np.asarray(y_val).astype(int)
    quantile = card.config.get("threshold_quantile")
    if len(y_val) and y_val.sum() == 0 and quantile is not None:
        q = float(quantile)
        return float(np.quantile(np.asarray(p_val, np.float64), q)), f"good_quantile({q:g})"
    return choose_threshold(y_val, p_val, settings.threshold_method, settings.cost_missed_defect,
                            settings.cost_false_alarm), settings.threshold_method


def evaluate(registry: ModelRegistry, version: str, patch_sets: dict[str, ArrayTable], settings: EvalSettings,
             store: ObjectStore, scorer: Scorer | None = None, latency_runs: int = LATENCY_RUNS
             ) -> tuple[EvaluationReport, dict[str, bytes]]:
    """Returns (report, {plot name: PNG}); writes report.json (its ``to_dict``) and report.html to
    the store. The report holds the model's latency on one full-size image (``candidate_latency``;
    0 runs skips)."""
    scorer = scorer or load_registered(registry, version)
    card = scorer.card
    classes, task = card.classes, card.task
    val = split_data(patch_sets, "validation", task, classes)
    test = split_data(patch_sets, "test", task, classes)
    if len(test.y) == 0:
        raise ValueError("the test split is empty: nothing to evaluate on")
    p_val, p_test = scorer.predict_proba(val.x), scorer.predict_proba(test.x)
    method = settings.threshold_method if task == "binary" else "argmax"
    if task == "binary":
        threshold, method = binary_threshold(card, val.y, p_val[:, 1], settings)
        doc = binary_report(test.y, p_test[:, 1], threshold)
        score, hist_classes = p_test[:, 1], classes
    else:
        threshold = None
        doc = multiclass_report(test.y, p_test, classes)
        score, hist_classes = 1 - p_test[:, 0], classes
    if settings.groupings:
        doc["groups"] = report_groups(test, p_test, task, threshold, settings.groupings)
    dv = data_version(patch_sets)
    stamp = dt.datetime.now(dt.UTC)
    eid = "eval-" + stamp.strftime("%Y%m%dT%H%M%S%f")[:-3] + "-" + hashlib.sha256(
        f"{version}:{dv['id']}:{settings}".encode()).hexdigest()[:8]
    doc.update({"evaluation_id": eid, "evaluated_at": stamp.isoformat(timespec="seconds"),
                "model_version": version, "model_family": card.family, "classes": classes,
                "data_version": dv, "trained_on": card.data_version.to_dict(), "threshold_method": method,
                "validation_at_training": card.validation.to_dict()})
    doc.update(candidate_latency(registry, version, patch_sets, store, latency_runs) if latency_runs
               else {"latency_p50_ms": float("nan"), "latency_p99_ms": float("nan"), "latency_runs": 0})
    prefix = f"evaluations/{card.family}/{eid}"
    doc["report_json"], doc["report_html"] = f"{prefix}/report.json", f"{prefix}/report.html"
    report = EvaluationReport.create(doc)
    title = f"{card.family} {version}"
    pngs = {
        "roc": plots.roc_png(report, f"ROC, test split ({report.n} patches)"),
        "confusion_matrix": plots.confusion_png(report.confusion_matrix, classes, "confusion matrix, test"),
        "score_histogram": plots.score_histogram_png(test.y if task == "binary" else (test.y > 0).astype(int),
                                                     score,
                                                     hist_classes if task == "binary" else ["first class", "others"],
                                                     threshold, "scores by true class, test"),
    }
    if task == "binary":
        pngs["pr"] = plots.pr_png(report, "precision-recall, test")
    store.write_bytes(report.report_json, json.dumps(report.to_dict(), indent=2, default=str).encode())
    store.write_bytes(report.report_html, render_report(f"Evaluation of {title}", facts(report),
                                                        sections(report, pngs)).encode())
    return report, pngs


def report_groups(test, p_test: np.ndarray, task: str, threshold: float | None, groupings) -> list[dict]:
    """Per-group figures of the defect decision for each named grouping found in the test table
    (multi-class: 'not the first class' at 0.5); a grouping the table lacks is skipped."""
    from defect_assets.ml.groups import group_metrics

    y = test.y if task == "binary" else (test.y > 0).astype(int)
    score = p_test[:, 1] if task == "binary" else 1 - p_test[:, 0]
    t = threshold if threshold is not None else 0.5
    return [row for col in groupings if col in test.table.columns
            for row in group_metrics(y, score, t, test.table[col].fillna("").astype(str).to_numpy(), col)]


def read_report(store: ObjectStore, key) -> EvaluationReport | None:
    """The stored report.json at ``key`` (None when there is none)."""
    if not isinstance(key, str) or not store.exists(key):
        return None
    return EvaluationReport.from_dict(json.loads(store.read_bytes(key)))


def group_history_rows(overall: dict, report: EvaluationReport | None) -> list[dict]:
    """The long-format rows of a report's groups: the overall row's identity, each group's figures."""
    out = []
    for g in (report.groups if report is not None else None) or []:
        row = {k: overall[k] for k in HISTORY_COLUMNS[:11] if k in overall}
        row.update({"grouping": g["grouping"], "group": g["group"], "test_patches": g["n"],
                    "test_defects": g["positives"], "accuracy": g["accuracy"], "recall": g["recall"],
                    "roc_auc": g["roc_auc"], "majority_baseline": g["majority_baseline"],
                    "accuracy_ci_low": g["accuracy_ci"][0], "accuracy_ci_high": g["accuracy_ci"][1],
                    "roc_auc_ci_low": g["roc_auc_ci"][0], "roc_auc_ci_high": g["roc_auc_ci"][1],
                    "recall_ci_low": g["recall_ci"][0], "recall_ci_high": g["recall_ci"][1],
                    "report_json": report.report_json, "report_html": report.report_html})
        out.append(row)
    return out


def facts(report: EvaluationReport) -> dict:
    return {"model": report.model_version, "evaluated at": report.evaluated_at,
            "test split": f"{report.n} patches from batches {', '.join(report.data_version.batches)}",
            "trained on": ", ".join(report.trained_on.batches),
            "majority-class baseline": f"accuracy {report.majority_baseline:.4f} (always the most frequent class)",
            "decision": (f"defect when probability >= {report.threshold:.4f} (threshold chosen on the validation "
                         f"split by {report.threshold_method})") if report.binary else "arg-max class",
            "latency": (f"p50 {report.latency_p50_ms:.1f} ms, p99 {report.latency_p99_ms:.1f} ms for one "
                        f"full-size image at one client ({report.latency_runs} calls through the served scorer)")
            if report.latency_runs else "not measured"}


def metric_table(report: EvaluationReport) -> pd.DataFrame:
    keys = ["accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc"] + (
        ["pr_auc"] if report.binary else [])
    return pd.DataFrame([{k: getattr(report, k) for k in keys}])


def interval_table(report: EvaluationReport) -> pd.DataFrame:
    """Accuracy and ROC AUC with their 95% bootstrap intervals, beside the majority baseline."""
    return pd.DataFrame([
        {"figure": "accuracy", "value": report.accuracy, "ci95_low": report.accuracy_ci[0],
         "ci95_high": report.accuracy_ci[1], "majority_baseline": report.majority_baseline},
        {"figure": "roc_auc", "value": report.roc_auc, "ci95_low": report.roc_auc_ci[0],
         "ci95_high": report.roc_auc_ci[1], "majority_baseline": 0.5}])


def sections(report: EvaluationReport, pngs: dict[str, bytes]) -> list:
    out = [("Metrics on the test split", metric_table(report), []),
           ("Intervals (95% bootstrap over test items) and the majority-class baseline", interval_table(report), [])]
    if report.task == "multiclass":
        out.append(("Per class", pd.DataFrame([c.to_dict() for c in report.per_class]), []))
    cm = pd.DataFrame(report.confusion_matrix, columns=[f"pred {c}" for c in report.classes])
    cm.insert(0, "true", report.classes)
    out.append(("Confusion matrix", cm, [pngs["confusion_matrix"]]))
    out.append(("Curves", None, [pngs[k] for k in ("roc", "pr") if k in pngs]))
    out.append(("Scores", None, [pngs["score_histogram"]]))
    return out


def _or_nan(value: float | None) -> float:
    return np.nan if value is None else value


def history_row(report: EvaluationReport) -> dict:
    cm = report.confusion_matrix
    binary = report.binary
    return {
        "evaluation_id": report.evaluation_id, "evaluated_at": report.evaluated_at,
        "model_family": report.model_family, "model_version": report.model_version, "task": report.task,
        "data_version": report.data_version.id, "batches": ",".join(report.data_version.batches),
        "trained_on_data_version": report.trained_on.id, "threshold_method": report.threshold_method,
        "threshold": report.threshold if binary else np.nan, "test_patches": report.n,
        "test_defects": _or_nan(report.positives),
        **{k: getattr(report, k) for k in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")},
        "pr_auc": _or_nan(report.pr_auc),
        "tn": cm[0][0] if binary else np.nan, "fp": cm[0][1] if binary else np.nan,
        "fn": cm[1][0] if binary else np.nan, "tp": cm[1][1] if binary else np.nan,
        "report_json": report.report_json, "report_html": report.report_html,
        "majority_baseline": report.majority_baseline,
        "accuracy_ci_low": report.accuracy_ci[0], "accuracy_ci_high": report.accuracy_ci[1],
        "roc_auc_ci_low": report.roc_auc_ci[0], "roc_auc_ci_high": report.roc_auc_ci[1],
        "latency_p50_ms": _or_nan(report.latency_p50_ms), "latency_p99_ms": _or_nan(report.latency_p99_ms),
        "grouping": "", "group": "", "recall_ci_low": np.nan, "recall_ci_high": np.nan,  # the overall row
    }


def append_history(store: ObjectStore, rows: list[dict]) -> pd.DataFrame:
    """Append rows whose evaluation_id is new. The CSV grows by appended lines only (older bytes
    unchanged); the Parquet copy is rewritten with the same older rows plus the new ones. When
    the schema gained columns (always at the end), the CSV is rewritten once, atomically, with
    the older rows' values unchanged and the new columns empty for them."""
    import io

    old_csv = store.read_bytes(HISTORY_CSV) if store.exists(HISTORY_CSV) else b""
    old = pd.read_csv(io.BytesIO(old_csv), dtype={"evaluation_id": str}) if old_csv \
        else pd.DataFrame(columns=HISTORY_COLUMNS)
    if old_csv and list(old.columns) != HISTORY_COLUMNS:
        if list(old.columns) != HISTORY_COLUMNS[:len(old.columns)]:
            raise ValueError(f"{store.url}/{HISTORY_CSV} has columns {list(old.columns)}, which are not a "
                             "prefix of the current schema; move it aside to start a new history")
        old = old.reindex(columns=HISTORY_COLUMNS)
        old_csv = old.to_csv(index=False, lineterminator="\n").encode()
        store.write_bytes(HISTORY_CSV, old_csv)  # the one-time schema migration
    known = set(old["evaluation_id"]) if len(old) else set()
    new = pd.DataFrame([r for r in rows if r["evaluation_id"] not in known], columns=HISTORY_COLUMNS)
    if len(new):
        lines = new.to_csv(index=False, header=not old_csv, lineterminator="\n").encode()
        store.write_bytes(HISTORY_CSV, old_csv + lines)
    full = pd.read_csv(io.BytesIO(store.read_bytes(HISTORY_CSV)), dtype={"evaluation_id": str}) \
        if (old_csv or len(new)) else pd.DataFrame(columns=HISTORY_COLUMNS)
    with store.open_write(HISTORY_PARQUET) as f:
        full.to_parquet(f, index=False)
    return new
