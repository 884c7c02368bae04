"""What the dashboard shows, read from the artifact store (no Dagster, no model loaded): every
section is built from the tables and documents the asset graph writes (keys in
``storage.layout``), so the page is as current as the last materialization and costs the
service nothing but a few small reads.

Sections (``summary``): model quality over evaluations (with each accuracy's 95% interval and
the majority baseline), the current and previous champions' ROC curves and confusion matrices,
data per batch, monitoring per day, the champion's most confident mistakes, and active-learning
progress when that table exists (with the labels given on each round's queue read from the label
store now, not only when the next round is published), the worst suspect labels (``label_issues``)
with their photos and the labelers' quality (agreement with gold, Cohen's kappa). A section whose
source is missing is ``None`` with a note of what to materialize; a chart of a present section that
would be empty has its reason in the section's ``empty`` (chart -> why, and what would fill it).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pandas as pd

from defect_assets.ml.intervals import majority_baseline, wilson_interval
from defect_assets.ml.records import EvaluationReport
from defect_assets.serving.errors import jsonable
from defect_assets.serving.labeling import LabelingDesk
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import current_version, read_json, read_table
from defect_assets.storage.labeling import LABEL_ISSUES, LabelLog, read_gold, read_label_issues
from defect_assets.storage.layout import (
    ACTIVE_LEARNING_PROGRESS,
    CHAMPIONS,
    HISTORY_CSV,
    HISTORY_PARQUET,
    MONITORING_CSV,
    MONITORING_PARQUET,
    asset_value_prefix,
    champion_predictions_key,
    champion_prefix,
    examples_key,
)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
QUALITY_COLUMNS = ["evaluation_id", "evaluated_at", "model_family", "model_version", "test_patches", "test_defects",
                   "accuracy", "accuracy_low", "accuracy_high", "majority_baseline", "balanced_accuracy", "precision",
                   "recall", "f1", "roc_auc"]
MONITORING_SHOWN = ["day", "model_version", "requests", "images", "defect_share", "latency_ms_p50", "latency_ms_p95",
                    "latency_ms_p99", "warmup_requests", "latency_ms_warmup", "inspect_requests",
                    "inspect_latency_ms_p50", "inspect_latency_ms_p95", "drift_images", "psi_min_images", "psi",
                    "drift_level", "drift_warning"]
DEFAULT_PSI_MIN_IMAGES = 200  # prediction_monitoring's default, for days written before the column existed
RATE_NAME = re.compile(r"accuracy|auc|rate|share|precision|recall|f1|kappa|agreement", re.IGNORECASE)
ROUND_NAMES = {"queued": "queued", "page_labels": "labels on the page when published",
               "labels_given": "labels given on this round's queue (now)", "pool_images": "pool images"}
ISSUE_SHOWN = 12
ISSUE_FIELDS = ["rank", "batch", "image", "given_label", "suggested_label", "self_confidence", "source", "labeler"]
LABELER_COLUMNS = ["labeler", "labeled", "gold_answered", "gold_agreement", "kappa_vs_others", "kappa_pairs"]
LABELER_CSV = "label_quality/labeler_quality.csv"
ISSUE_COUNTS_CSV = "label_quality/issue_counts.csv"
BATCH_COLUMNS = ["batch", "images", "rejected", "patches", "defect_patches", "ok_patches", "defect_share",
                 "drift_auc", "drift_p", "drift"]  # drift: issue 25 (batch_drift)


def _drift_of(store: ObjectStore, batch: str) -> dict:
    """The batch_drift columns of a batch: domain AUC, p-value and what to do when it differs."""
    meta = current_version(store, asset_value_prefix("batch_drift", batch))
    if meta is None or "document" not in meta.get("files", {}):
        return {"drift_auc": None, "drift_p": None, "drift": "not measured (materialize batch_drift)"}
    doc = read_json(store, meta["files"]["document"])
    what = ("held back from retraining: " + str(doc.get("reason", ""))) if doc.get("differs") else "like training"
    return {"drift_auc": doc.get("domain_auc"), "drift_p": doc.get("p_value"), "drift": what}


def records(df: pd.DataFrame, columns: list[str]) -> list[dict]:
    present = [c for c in columns if c in df.columns]
    return jsonable(df[present].astype(object).where(df[present].notna(), None).to_dict("records"))


def _parquet(store: ObjectStore, key: str) -> pd.DataFrame | None:
    if not store.exists(key):
        return None
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


# --- sections ---

def quality(store: ObjectStore) -> dict | None:
    """Every evaluation in the history, oldest first, with accuracy's interval and the baseline."""
    history = _parquet(store, HISTORY_PARQUET)
    if history is None or not len(history):
        return None
    history = history.sort_values("evaluated_at", kind="stable").reset_index(drop=True)
    n = history["test_patches"].astype(float)
    correct = history["accuracy"].astype(float) * n
    bounds = [wilson_interval(c, m) for c, m in zip(correct, n)]
    history["accuracy_low"] = [b[0] for b in bounds]
    history["accuracy_high"] = [b[1] for b in bounds]
    history["majority_baseline"] = [majority_baseline(p, m) for p, m in zip(history["test_defects"].astype(float), n)]
    return {"rows": records(history, QUALITY_COLUMNS), "columns": QUALITY_COLUMNS,
            "downloads": {"csv": "/dashboard/files/evaluation_history.csv",
                          "parquet": "/dashboard/files/evaluation_history.parquet"}}


def _report(store: ObjectStore, history: pd.DataFrame | None, entry: dict) -> dict:
    """A champion entry joined with its evaluation report (curves, confusion matrix)."""
    out = {k: entry.get(k) for k in ("model_version", "family", "evaluation_id", "threshold", "recorded_at")}
    row = None
    if history is not None and len(history):
        match = history[history["evaluation_id"].astype(str) == str(entry.get("evaluation_id"))]
        row = match.iloc[0] if len(match) else None
    if row is None or not store.exists(str(row["report_json"])):
        out["note"] = "its evaluation report is not in the store"
        return out
    report = EvaluationReport.from_dict(read_json(store, str(row["report_json"])))
    n, positives = report.n, report.positives
    curves = ({"defect vs ok": report.roc_curve.to_dict()} if report.roc_curve is not None
              else {f"{c} vs rest": v.to_dict() for c, v in (report.ovr_roc_curves or {}).items()})
    low, high = wilson_interval(report.accuracy * n, n)
    out.update({"task": report.task, "classes": report.classes, "test_patches": n,
                "positives": positives, "accuracy": report.accuracy, "accuracy_low": low,
                "accuracy_high": high, "majority_baseline": majority_baseline(positives, n)
                if positives is not None else None, "roc_auc": report.roc_auc,
                "recall": report.recall, "precision": report.precision,
                "confusion_matrix": report.confusion_matrix, "roc_curves": curves,
                "evaluated_at": report.evaluated_at})
    return out


def champions(store: ObjectStore) -> dict | None:
    """The current approved champion and the one before it (a different model version)."""
    if not store.exists(CHAMPIONS):
        return None
    items = read_json(store, CHAMPIONS).get("champions", [])
    if not items:
        return None
    history = _parquet(store, HISTORY_PARQUET)
    current = items[-1]
    previous = next((c for c in reversed(items[:-1]) if c["model_version"] != current["model_version"]), None)
    return jsonable({"current": _report(store, history, current),
                  "previous": _report(store, history, previous) if previous else None,
                  "count": len(items)})


def _table_of(store: ObjectStore, asset: str, batch: str) -> pd.DataFrame | None:
    meta = current_version(store, asset_value_prefix(asset, batch))
    if meta is None or "table" not in meta.get("files", {}):
        return None
    return read_table(store, meta["files"]["table"])


def _balance_empty(rows: list[dict]) -> dict:
    if any(r["patches"] for r in rows):
        return {}
    return {"balance": "no labeled patches in these batches yet: materialize labeled_patches for them "
                       "(prepare_batch_job); a batch without labels has none"}


def batches(store: ObjectStore) -> dict | None:
    """Images, rejected files and class balance (patches called defect / ok) per batch."""
    names = sorted(store.walk_prefixes("raw_images/"))
    rows = []
    for b in names:
        inventory, patches = _table_of(store, "raw_images", b), _table_of(store, "labeled_patches", b)
        if inventory is None:
            continue
        defect = int(patches["is_defect"].astype(bool).sum()) if patches is not None else None
        total = len(patches) if patches is not None else None
        rows.append({"batch": b, "images": int((inventory["role"] == "image").sum()),
                     "rejected": int((inventory["role"] == "rejected").sum()), "patches": total,
                     "defect_patches": defect, "ok_patches": None if total is None else total - defect,
                     "defect_share": None if not total else defect / total, **_drift_of(store, b)})
    return {"rows": jsonable(rows), "columns": BATCH_COLUMNS, "empty": _balance_empty(rows)} if rows else None


def monitoring(store: ObjectStore) -> dict | None:
    table = _parquet(store, MONITORING_PARQUET)
    if table is None or not len(table):
        return None
    table = table[table["images"] > 0].sort_values(["day", "model_version"], kind="stable")
    return {"rows": records(table, MONITORING_SHOWN), "columns": MONITORING_SHOWN,
            "drift_level": jsonable(float(table["drift_level"].max())) if len(table) else None,
            "empty": monitoring_empty(table),
            "downloads": {"csv": "/dashboard/files/prediction_monitoring.csv",
                          "parquet": "/dashboard/files/prediction_monitoring.parquet"}}


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    return table[name] if name in table.columns else pd.Series([float("nan")] * len(table), index=table.index)


def monitoring_empty(table: pd.DataFrame) -> dict:
    """Why a monitoring chart has nothing to draw, and what would fill it."""
    empty = {}
    if not len(table):
        return {c: "no day with scored images yet" for c in ("volume", "latency", "defects", "drift")}
    if _column(table, "psi").isna().all():
        need = int(_column(table, "psi_min_images").fillna(DEFAULT_PSI_MIN_IMAGES).max())
        most = int(_column(table, "drift_images").fillna(0).max())
        if (_column(table, "reference_patches").fillna(0) == 0).all():
            empty["drift"] = ("no PSI yet: it compares a day's /v1/predict scores with the model's test-split scores, "
                              "and none are stored for the model(s) seen: materialize champion_test_predictions")
        else:
            empty["drift"] = (f"no PSI yet: it needs at least {need} images scored by /v1/predict on one day by one "
                              f"model (prediction_monitoring's min_images); the busiest day here had {most}. Score "
                              f"more images a day, or lower min_images (a smaller sample drifts by chance alone)")
    latency = pd.concat([_column(table, c) for c in ("latency_ms_p50", "latency_ms_warmup", "inspect_latency_ms_p50")])
    if latency.isna().all():
        empty["latency"] = "no request latency recorded on these days"
    return empty


def mistakes(store: ObjectStore, version: str | None) -> dict | None:
    """The champion's most confident misses and false alarms, with picture URLs."""
    if not version or not store.exists(examples_key(version)):
        return None
    doc = read_json(store, examples_key(version))
    prefix = champion_prefix(version) + "/examples/"
    for kind in ("misses", "false_alarms"):
        for ex in doc.get(kind, []):
            for field in ("picture", "heatmap"):
                name = str(ex.get(field, ""))
                if name.startswith(prefix):
                    ex[field + "_url"] = f"/dashboard/examples/{version}/{name[len(prefix):]}"
    doc["downloads"] = {"csv": f"/dashboard/files/test_predictions/{version}.csv",
                        "parquet": f"/dashboard/files/test_predictions/{version}.parquet"}
    return jsonable(doc)


def _is_rate(name: str, values: pd.Series) -> bool:
    """A column on the 0..1 scale (accuracy, AUC, a share): drawn apart from the counts."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(RATE_NAME.search(name)) or (len(v) > 0 and bool((v % 1 != 0).any()) and bool(v.between(0, 1).all()))


def active_learning(store: ObjectStore, labels: pd.DataFrame) -> dict | None:
    """Rows of active_learning/progress.csv (one per labeling round) once active learning writes it,
    each with ``labels_given``: the active labels given on that round's queue, read from the label
    store now (``page_labels`` is what the page had stored when the round was published). Numeric
    columns are split into counts and rates (0..1), drawn on separate charts over integer rounds."""
    if not store.exists(ACTIVE_LEARNING_PROGRESS):
        return None
    table = pd.read_csv(io.BytesIO(store.read_bytes(ACTIVE_LEARNING_PROGRESS)))
    if not len(table):
        return None
    x = "round" if "round" in table.columns else str(table.columns[0])
    by_queue = labels["queue"].astype(str).value_counts() if len(labels) else pd.Series(dtype=int)
    if "queue" in table.columns:
        table["labels_given"] = [int(by_queue.get(str(q), 0)) for q in table["queue"]]
    numeric = [c for c in table.columns if c != x and pd.api.types.is_numeric_dtype(table[c])]
    rates = [c for c in numeric if _is_rate(c, table[c])]
    counts = [c for c in numeric if c not in rates]
    empty = {}
    if not rates or table[rates].isna().all().all():
        empty["rates"] = ("no test metrics with these rounds: each round records the production model's test "
                          "accuracy and ROC AUC as deployed_endpoint wrote them (deploy_job); a model promoted "
                          "by hand has none")
    if not counts:
        empty["counts"] = "no count column in active_learning/progress.csv"
    return {"rows": records(table, list(table.columns)), "columns": list(table.columns), "x": x,
            "counts": counts, "rates": rates, "names": {c: ROUND_NAMES.get(c, c) for c in counts + rates},
            "page_labels_now": int(len(labels)), "empty": empty,
            "downloads": {"csv": "/dashboard/files/active_learning.csv"}}


def label_issues(store: ObjectStore, shown: int = ISSUE_SHOWN) -> dict | None:
    """The worst suspects of the latest label_issues table (lowest self-confidence of the given
    label first), each with a photo URL and a link to the review queue on the labeling page."""
    issues = read_label_issues(store)
    if issues is None or not len(issues):
        return None
    flagged = issues["is_issue"].astype(str).str.lower() == "true"
    suspects = issues[flagged].sort_values("self_confidence", kind="stable").head(shown)
    items = []
    for r in suspects.to_dict("records"):
        item = {k: r.get(k) for k in ISSUE_FIELDS}
        item["self_confidence"] = float(item["self_confidence"])
        rid = LabelingDesk.review_id(str(r["batch"]), str(r["image"]))
        item.update(item_id=rid, image_url=f"/dashboard/label_issues/{rid}/image", review_url="/label#review")
        items.append(item)
    return jsonable({"images": len(issues), "issues": int(flagged.sum()), "shown": items,
                     "columns": ISSUE_FIELDS, "review_url": "/label#review",
                     "note": None if items else f"no suspect label among the {len(issues)} labeled images",
                     "downloads": {"label_issues.csv": "/dashboard/files/label_issues.csv",
                                   "issue_counts.csv": "/dashboard/files/issue_counts.csv"}})


def labeler_table(store: ObjectStore) -> pd.DataFrame:
    """Per labeler: labels, gold answers, agreement with gold, mean Cohen's kappa with the others
    (``LabelingDesk.labeler_quality``), as a table (``LABELER_COLUMNS``)."""
    return pd.DataFrame(LabelingDesk(store).labeler_quality(), columns=LABELER_COLUMNS)


def write_labeler_csv(store: ObjectStore) -> pd.DataFrame:
    """``label_quality/labeler_quality.csv`` for BI (one atomic write), next to the label-issue tables."""
    table = labeler_table(store)
    store.write_bytes(LABELER_CSV, table.to_csv(index=False).encode())
    return table


def labelers(store: ObjectStore) -> dict | None:
    """The labeler-quality table, or None when nobody labeled on the labeling page yet."""
    table = labeler_table(store)
    if not len(table):
        return None
    note = None
    if not int(table["gold_answered"].sum()):
        note = ("no gold answers yet: materialize label_issues with gold_items > 0, then labeling_queue with "
                "gold_rate > 0" if not len(read_gold(store)) else
                "no gold answers yet: set gold_rate on labeling_queue so the queues mix the gold items in")
    return {"rows": records(table, LABELER_COLUMNS), "columns": LABELER_COLUMNS, "gold_items": len(read_gold(store)),
            "note": note, "downloads": {"csv": "/dashboard/files/labeler_quality.csv"}}


def summary(store: ObjectStore) -> dict:
    champs = champions(store)
    version = champs["current"]["model_version"] if champs else None
    page_labels = LabelLog(store).labels()
    sections = {"quality": quality(store), "champions": champs, "batches": batches(store),
                "monitoring": monitoring(store), "mistakes": mistakes(store, version),
                "active_learning": active_learning(store, page_labels), "label_issues": label_issues(store),
                "labelers": labelers(store)}
    missing = {
        "quality": "no evaluation yet: materialize the evaluation assets (evaluate_job)",
        "champions": "no approved champion yet: materialize champion_test_predictions (evaluate_job)",
        "batches": "no batch ingested yet: materialize raw_images (prepare_batch_job)",
        "monitoring": "no monitored day yet: the scoring service logs predictions; materialize "
                      "prediction_monitoring (monitoring_job, daily_monitoring_schedule)",
        "mistakes": "no champion test predictions yet: materialize champion_test_predictions",
        "active_learning": "no labeling rounds recorded yet: labeling_queue writes active_learning/progress.csv "
                           f"when it publishes a queue; {len(page_labels)} label(s) given on the labeling page so far",
        "label_issues": "no label-issue table yet: materialize label_issues (group label_quality)",
        "labelers": "no labels from the labeling page yet: publish a queue (labeling_queue; gold_rate mixes gold "
                    "items in) and label on /label",
    }
    return {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "store": store.url,
            **sections, "notes": {k: v for k, v in missing.items() if sections[k] is None}}


# --- files behind the charts ---

FIXED_FILES = {
    "evaluation_history.csv": (HISTORY_CSV, "text/csv"),
    "evaluation_history.parquet": (HISTORY_PARQUET, "application/vnd.apache.parquet"),
    "prediction_monitoring.csv": (MONITORING_CSV, "text/csv"),
    "prediction_monitoring.parquet": (MONITORING_PARQUET, "application/vnd.apache.parquet"),
    "active_learning.csv": (ACTIVE_LEARNING_PROGRESS, "text/csv"),
    "label_issues.csv": (LABEL_ISSUES, "text/csv"),
    "issue_counts.csv": (ISSUE_COUNTS_CSV, "text/csv"),
    "labeler_quality.csv": (LABELER_CSV, "text/csv"),
}


def download_key(name: str, version: str | None = None) -> tuple[str, str] | None:
    """(store key, media type) of a downloadable table, or None for anything else."""
    if version is None:
        return FIXED_FILES.get(name)
    if not SAFE_NAME.match(version) or name not in ("csv", "parquet"):
        return None
    return champion_predictions_key(version, name), "text/csv" if name == "csv" else "application/vnd.apache.parquet"


def example_key(version: str, name: str) -> str | None:
    """Store key of an example picture, or None when the names are not plain file names."""
    if not SAFE_NAME.match(version) or not SAFE_NAME.match(name) or not name.endswith(".png"):
        return None
    return f"{champion_prefix(version)}/examples/{name}"


def label_issue_image_key(store: ObjectStore, item_id: str) -> str | None:
    """Store key of a label_issues image by its review id, or None when it is not in the table."""
    issues = read_label_issues(store)
    if issues is None or not SAFE_NAME.match(item_id):
        return None
    for r in issues[["batch", "image", "stored_key"]].to_dict("records"):
        if LabelingDesk.review_id(r["batch"], r["image"]) == item_id:
            return r["stored_key"] or None
    return None


def dumps(doc: dict) -> bytes:
    return json.dumps(doc, allow_nan=False).encode()
