"""prediction_monitoring: one UTC day of the prediction log per partition (volume, latency,
share called defective, score drift against the test split) with its drift warning as an asset
check. The logic is in ``pipeline/monitoring.py``."""

import dagster as dg

from defect_assets.defs.metadata import md_png, md_table, readable, significant
from defect_assets.defs.partitions import check_day_partition, daily_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.ml import plots
from defect_assets.pipeline.monitoring import (
    LATENCY_ROUTE,
    DayMonitoring,
    MonitoringSettings,
    monitor_day,
    request_latencies,
)
from defect_assets.storage.layout import MONITORING_CSV, MONITORING_PARQUET

DRIFT_CHECK = "score_drift_below_warning_level"


class MonitoringConfig(dg.Config):
    warn_psi: float = 0.25
    """Warn when a model's score distribution drifts further than this PSI from its test split's
    (0.1: a moderate shift, 0.25: a significant one)."""
    bins: int = 10
    """PSI bins, cut at the test split's score quantiles."""
    min_images: int = 200
    """A model with fewer scored images that day gets no PSI (too noisy to judge)."""


def _plots(result: DayMonitoring) -> dict:
    meta = {}
    records = result.log.records
    if len(records):
        requests = request_latencies(records)
        latency = requests.loc[~requests["warmup"] & (requests["route"] == LATENCY_ROUTE), "latency_ms"]
        if len(latency):
            meta["plot_latency"] = md_png(plots.histogram_png(latency, f"/v1/predict latency, {result.day} "
                                                                       "(warm-up excluded)", "ms"), "request latency")
    for version, drift in result.drift.items():
        png = plots.drift_png(drift.reference_share, drift.current_share, drift.edges, drift.psi,
                              f"{version}, {result.day}")
        meta[f"plot_drift_{version}"] = md_png(png, f"score distribution vs test split ({version})")
    return meta


@dg.asset(group_name="monitoring", kinds={"parquet", "csv"}, partitions_def=daily_partitions,
          deps=["champion_test_predictions"],
          check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset="prediction_monitoring",
                                         description="The day's score distribution of each model stays within "
                                                     "the configured PSI of its test split's")])
def prediction_monitoring(context: dg.AssetExecutionContext, config: MonitoringConfig,
                          artifact_store: StorageResource):
    """What the live endpoint saw on one UTC day, per model version: requests, images, latency
    percentiles (p50/p95/p99 of /v1/predict, and of /v1/inspect apart; the first request after a
    model load is a warm-up, reported apart), share of images called defective, and the population stability
    index of the defect scores against the same model's scores on the test split. Written as
    Parquet and CSV for BI tools (monitoring/prediction_monitoring.*); a warning check fires
    when the PSI passes warn_psi."""
    check_day_partition(context.partition_key)
    store = artifact_store.open()
    settings = MonitoringSettings(warn_psi=config.warn_psi, bins=config.bins, min_images=config.min_images)
    result = monitor_day(store, context.partition_key, settings)
    rows = result.rows
    for note in result.notes:
        context.log.info(note)
    if result.log.rejected:
        context.log.warning(f"{len(result.log.rejected)} prediction-log segment(s) not whole, skipped: "
                            + "; ".join(result.log.rejected[:5]))
    shown = ["model_version", "requests", "images", "defect_share", "latency_ms_p50", "latency_ms_p95",
             "latency_ms_p99", "warmup_requests", "latency_ms_warmup", "psi", "drift_warning"]
    psi = rows["psi"].dropna()
    yield dg.Output(rows, metadata=readable({
        "day": context.partition_key, "requests": int(rows["requests"].sum()), "images": int(rows["images"].sum()),
        "max_psi": float(psi.max()) if len(psi) else float("nan"), "drift_level": config.warn_psi,
        "segments": result.log.segments, "rejected_segments": len(result.log.rejected),
        "summary": md_table(rows[shown]), "notes": dg.MetadataValue.md("\n".join(
            f"- {n}" for n in result.notes) or "(none)"),
        "csv": dg.MetadataValue.path(f"{store.url}/{MONITORING_CSV}"),
        "parquet": dg.MetadataValue.path(f"{store.url}/{MONITORING_PARQUET}"), **_plots(result)}))
    warned = result.warnings
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK, passed=warned.empty, severity=dg.AssetCheckSeverity.WARN,
        description=None if warned.empty else "; ".join(
            f"{r.model_version}: PSI {significant(r.psi):g} > {config.warn_psi}" for r in warned.itertuples()),
        metadata=readable({"max_psi": float(psi.max()) if len(psi) else float("nan"), "drift_level": config.warn_psi,
                  "models_judged": len(psi), "models_seen": int((rows["images"] > 0).sum()),
                  "day": context.partition_key}))

