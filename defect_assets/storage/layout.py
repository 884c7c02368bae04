"""Where the artifact store keeps what more than one layer reads: the asset graph writes these
keys (``pipeline/``, through ``defs/``) and the web app's dashboard reads them (``serving/``),
so the names live here, below both. The schemas of the tables are in docs/bi.md ("Tables for BI
tools").

| key | written by | what |
|---|---|---|
| ``<asset>/<partition>/current.json`` | the IO manager | the current version of a stored asset value |
| ``evaluation_history/evaluation_history.{csv,parquet}`` | ``evaluation_history`` | one row per evaluation |
| ``prediction_log/day=YYYY-MM-DD/*.jsonl`` | the scoring service | one record per scored image |
| ``monitoring/prediction_monitoring.{csv,parquet}`` | ``prediction_monitoring`` | one row per day and model |
| ``monitoring/daily/day=YYYY-MM-DD.parquet`` | ``prediction_monitoring`` | that day's rows (the source of the above) |
| ``champion/champions.json`` | ``champion_test_predictions`` | every approved champion, oldest first |
| ``champion/<version>/test_predictions.{csv,parquet}`` | ``champion_test_predictions`` | its score per test patch |
| ``champion/<version>/examples.json`` (+ PNGs) | ``champion_test_predictions`` | its most confident mistakes |
| ``champion/gates/<gate>.json`` | the champion's checks | each gate's latest result, read by ``deployed_endpoint`` |
| ``active_learning/progress.csv`` | active learning (when it exists) | one row per labeling round |
"""

from __future__ import annotations

UNPARTITIONED = "__all__"

HISTORY_CSV = "evaluation_history/evaluation_history.csv"
HISTORY_PARQUET = "evaluation_history/evaluation_history.parquet"

MONITORING_CSV = "monitoring/prediction_monitoring.csv"
MONITORING_PARQUET = "monitoring/prediction_monitoring.parquet"
MONITORING_DAILY = "monitoring/daily"

CHAMPIONS = "champion/champions.json"
ACTIVE_LEARNING_PROGRESS = "active_learning/progress.csv"


def asset_value_prefix(asset_path: list[str] | tuple[str, ...] | str, partition: str | None = None) -> str:
    """Where the IO manager stores an asset's value (one partition, or the unpartitioned one)."""
    path = [asset_path] if isinstance(asset_path, str) else list(asset_path)
    return "/".join(path) + "/" + (partition or UNPARTITIONED)


def monitoring_day_key(day: str) -> str:
    return f"{MONITORING_DAILY}/day={day}.parquet"


def champion_prefix(version: str) -> str:
    return f"champion/{version}"


def champion_predictions_key(version: str, ext: str = "parquet") -> str:
    return f"{champion_prefix(version)}/test_predictions.{ext}"


def champion_gate_key(gate: str) -> str:
    """The latest result of one champion gate (a blocking check), for a later deployment to read."""
    return f"champion/gates/{gate}.json"


def examples_key(version: str) -> str:
    return f"{champion_prefix(version)}/examples.json"
