"""Prediction monitoring, without Dagster: one day of the prediction log summarized per model
version (request volume, latency percentiles, share of images called defective) and the drift
of its score distribution against the same model's scores on the test split (PSI,
``ml.drift``), written as tables a BI tool reads directly.

Latency is per request, in two populations that differ by orders of magnitude: /v1/predict
(``latency_ms_p50/p95/p99``) and /v1/inspect (hundreds of windows of one photo,
``inspect_latency_ms_*``). The first request answered after each model load (marked ``warmup`` in
the log) is in neither: it pays what warming did not cover, and on a quiet day one such request
is the whole p95/p99. It is counted in ``warmup_requests`` with its latency in
``latency_ms_warmup``.

Tables (keys in ``storage.layout``, columns ``MONITORING_COLUMNS``, documented in docs/bi.md):
``monitoring/daily/day=YYYY-MM-DD.parquet`` holds one day's rows and is what a run writes; the
combined ``monitoring/prediction_monitoring.parquet`` and ``.csv`` are rebuilt from every daily
file after each run; ``monitoring/predictions/day=YYYY-MM-DD.parquet`` holds the day's records.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from defect_assets.ml.drift import DriftResult, population_stability_index
from defect_assets.pipeline.mistakes import reference_scores
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.layout import MONITORING_CSV, MONITORING_DAILY, MONITORING_PARQUET, monitoring_day_key
from defect_assets.storage.prediction_log import LogDay, read_day

MONITORING_COLUMNS = [
    "day", "model_version", "requests", "images", "defect_share", "mean_defect_score",
    "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "drift_images", "reference_patches", "psi",
    "psi_chance_level", "drift_level", "drift_warning", "rejected_segments", "computed_at",
    "warmup_requests", "latency_ms_warmup", "inspect_requests", "inspect_latency_ms_p50", "inspect_latency_ms_p95",
    "psi_min_images",
]
LATENCY_ROUTE = "predict"
"""The route of the latency percentiles (inspect's have their own columns)."""
DRIFT_ROUTE = "predict"
"""Drift compares whole-image scores with the test split's; inspect's window maxima are another
quantity and are counted in volume and latency only."""


@dataclass(frozen=True)
class MonitoringSettings:
    warn_psi: float = 0.25
    """PSI above this warns (0.25: the usual 'significant shift')."""
    bins: int = 10
    min_images: int = 200
    """Below this many scored images a day's PSI is not computed (chance alone moves it by
    about (bins - 1) / images)."""


@dataclass
class DayMonitoring:
    day: str
    rows: pd.DataFrame
    log: LogDay
    drift: dict[str, DriftResult] = field(default_factory=dict)
    references: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> pd.DataFrame:
        return self.rows[self.rows["drift_warning"].astype(bool)]


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def request_latencies(records: pd.DataFrame) -> pd.DataFrame:
    """One row per request: route, latency_ms, warmup (a request's records share them)."""
    if "warmup" not in records.columns:
        records = records.assign(warmup=False)
    firsts = records.groupby("request_id", sort=False)[["route", "latency_ms", "warmup"]].first()
    return firsts.assign(warmup=firsts["warmup"].fillna(False).astype(bool))


def latency_columns(records: pd.DataFrame) -> dict:
    """The latency columns of one model's day: /v1/predict percentiles and /v1/inspect's, both
    without the warm-up request(s), which are counted and timed apart."""
    requests = request_latencies(records)
    warm, timed = requests[requests["warmup"]], requests[~requests["warmup"]]
    predict = timed.loc[timed["route"] == LATENCY_ROUTE, "latency_ms"].to_numpy(np.float64)
    inspect = timed.loc[timed["route"] == "inspect", "latency_ms"].to_numpy(np.float64)
    return {"latency_ms_p50": _percentile(predict, 50), "latency_ms_p95": _percentile(predict, 95),
            "latency_ms_p99": _percentile(predict, 99), "warmup_requests": int(len(warm)),
            "latency_ms_warmup": float(warm["latency_ms"].max()) if len(warm) else float("nan"),
            "inspect_requests": int((requests["route"] == "inspect").sum()),
            "inspect_latency_ms_p50": _percentile(inspect, 50), "inspect_latency_ms_p95": _percentile(inspect, 95)}


def summarize_version(day: str, version: str, records: pd.DataFrame, reference: np.ndarray | None,
                      settings: MonitoringSettings, rejected: int, now: str) -> tuple[dict, DriftResult | None, str]:
    """One row of the table, the drift result (when computed) and a note saying why not."""
    requests = records["request_id"].nunique()
    scored = records[records["route"] == DRIFT_ROUTE]["defect_score"].to_numpy(np.float64)
    drift, note = None, ""
    if reference is None or not len(reference):
        note = f"{version}: no test-split scores stored (materialize champion_test_predictions for it)"
    elif len(scored) < settings.min_images:
        note = f"{version}: {len(scored)} scored images, fewer than min_images={settings.min_images}: PSI not computed"
    else:
        drift = population_stability_index(reference, scored, settings.bins)
    row = {
        "day": day, "model_version": version, "requests": int(requests), "images": int(len(records)),
        "defect_share": float(records["is_defect"].astype(bool).mean()) if len(records) else float("nan"),
        "mean_defect_score": float(records["defect_score"].mean()) if len(records) else float("nan"),
        **latency_columns(records), "drift_images": int(len(scored)), "psi_min_images": int(settings.min_images),
        "reference_patches": int(len(reference)) if reference is not None else 0,
        "psi": drift.psi if drift else float("nan"), "psi_chance_level": drift.chance_level if drift else float("nan"),
        "drift_level": float(settings.warn_psi),
        "drift_warning": bool(drift is not None and drift.psi > settings.warn_psi),
        "rejected_segments": int(rejected), "computed_at": now,
    }
    return row, drift, note


def monitor_day(store: ObjectStore, day: str, settings: MonitoringSettings = MonitoringSettings()) -> DayMonitoring:
    """Summarize ``day`` of the prediction log and store its tables."""
    log = read_day(store, day)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    rows, result = [], DayMonitoring(day, pd.DataFrame(), log)
    records = log.records
    for version in sorted(records["model_version"].dropna().unique()):
        reference = reference_scores(store, version)
        if reference is not None:
            result.references[version] = reference
        row, drift, note = summarize_version(day, version, records[records["model_version"] == version], reference,
                                             settings, len(log.rejected), now)
        rows.append(row)
        if drift is not None:
            result.drift[version] = drift
        if note:
            result.notes.append(note)
    if not rows:  # a day without predictions is a row of zeros, so volume charts show the gap
        rows.append({**dict.fromkeys(MONITORING_COLUMNS, float("nan")), "day": day, "model_version": "",
                     "requests": 0, "images": 0, "drift_images": 0, "reference_patches": 0, "warmup_requests": 0,
                     "inspect_requests": 0, "psi_min_images": int(settings.min_images),
                     "drift_level": float(settings.warn_psi), "drift_warning": False,
                     "rejected_segments": len(log.rejected), "computed_at": now})
    result.rows = pd.DataFrame(rows, columns=MONITORING_COLUMNS)
    write_tables(store, day, result.rows, records)
    return result


def write_tables(store: ObjectStore, day: str, rows: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Store the day's rows and records, then rebuild the combined table from every day's file."""
    with store.open_write(monitoring_day_key(day)) as f:
        rows.to_parquet(f, index=False)
    with store.open_write(f"monitoring/predictions/day={day}.parquet") as f:
        records.to_parquet(f, index=False)
    combined = read_daily_tables(store)
    with store.open_write(MONITORING_PARQUET) as f:
        combined.to_parquet(f, index=False)
    store.write_bytes(MONITORING_CSV, combined.to_csv(index=False, lineterminator="\n").encode())
    return combined


def read_daily_tables(store: ObjectStore) -> pd.DataFrame:
    frames = [pd.read_parquet(io.BytesIO(store.read_bytes(o.key))) for o in store.list(MONITORING_DAILY + "/")
              if o.key.endswith(".parquet")]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=MONITORING_COLUMNS)
    # days written before a column existed get it empty (their rows are not rewritten)
    table = pd.concat(frames, ignore_index=True).reindex(columns=MONITORING_COLUMNS)
    return table.sort_values(["day", "model_version"], kind="stable").reset_index(drop=True)
