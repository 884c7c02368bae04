"""Evaluation assets (one per registered model family), the append-only evaluation history, and
the champion; the history and the champion take every family's evaluation. All of them are built
by ``build_evaluation_assets`` from ``family_registry.families()`` when the definitions are built.
The champion's gates are blocking asset checks (``checks.py``)."""

from typing import Literal

import dagster as dg
import pandas as pd

from defect_assets.defs.metadata import md_png, md_table, readable, significant
from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline.champion import Champion, pick_champion
from defect_assets.pipeline.evaluate import (
    HISTORY_CSV,
    HISTORY_PARQUET,
    EvalSettings,
    append_history,
    evaluate,
    group_history_rows,
    history_row,
    interval_table,
    metric_table,
    read_report,
)
from defect_assets.pipeline.family_registry import Family, families
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry


class EvaluationConfig(dg.Config):
    threshold_method: Literal["max_f1", "cost"] = "max_f1"
    """'max_f1' (best F1 on validation) or 'cost' (fewest cost_missed_defect*FN + cost_false_alarm*FP)."""
    cost_missed_defect: float = 5.0
    cost_false_alarm: float = 1.0
    groupings: list[str] = []
    """Columns of the test patches (``batch``, ``group``, a label file's categorical column) to break
    the figures down by: per group accuracy, recall and AUC with intervals and majority baseline."""


def build_evaluation_asset(family: Family) -> dg.AssetsDefinition:
    @dg.asset(name=family.evaluation, group_name="evaluation", kinds={"scikitlearn", "html"},
              description=(f"The {family.name} model on the held-out test split: accuracy, balanced accuracy, "
                           "precision, recall, F1, ROC AUC, PR AUC, confusion matrix (per class for multi-class), "
                           "with the threshold chosen on the validation split. Report as JSON and self-contained "
                           "HTML."),
              ins={"model": dg.AssetIn(family.asset), "labeled_patches": dg.AssetIn("labeled_patches")})
    def _evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, model: pd.DataFrame,
                    labeled_patches: dict[str, ArrayTable], artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
        store = artifact_store.open()
        version = str(model["version"].iloc[0])
        settings = EvalSettings(config.threshold_method, config.cost_missed_defect, config.cost_false_alarm,
                                tuple(config.groupings))
        report, pngs = evaluate(ModelRegistry(store), version, labeled_patches, settings, store)
        metrics = metric_table(report)
        context.log.info(f"{family.name} {version} on the test split: "
                         + ", ".join(f"{k} {v:.3f}" for k, v in metrics.iloc[0].items()))
        cm = pd.DataFrame(report.confusion_matrix, columns=[f"pred {c}" for c in report.classes])
        cm.insert(0, "true", report.classes)
        meta = {"model_version": version, "threshold": report.threshold or 0.0,
                **{k: float(v) for k, v in metrics.iloc[0].items()},
                "majority_baseline": float(report.majority_baseline),
                "accuracy_ci95": f"{significant(report.accuracy_ci[0]):g} - {significant(report.accuracy_ci[1]):g}",
                "roc_auc_ci95": f"{significant(report.roc_auc_ci[0]):g} - {significant(report.roc_auc_ci[1]):g}",
                "metrics": md_table(metrics), "intervals": md_table(interval_table(report)),
                "confusion_matrix": md_table(cm),
                "report_html": dg.MetadataValue.path(f"{store.url}/{report.report_html}"),
                "test_patches": report.n, "data_version": report.data_version.id}
        for name, png in pngs.items():
            meta[f"plot_{name}"] = md_png(png, name.replace("_", " "))
        if report.task == "multiclass":
            meta["per_class"] = md_table(pd.DataFrame([c.to_dict() for c in report.per_class]))
        return dg.Output(pd.DataFrame([history_row(report)]), metadata=readable(meta))

    return _evaluation


def build_evaluation_history(evaluation_ins: dict[str, dg.AssetIn]) -> dg.AssetsDefinition:
    @dg.asset(name="evaluation_history", group_name="evaluation", kinds={"parquet", "csv"}, ins=evaluation_ins)
    def evaluation_history(context: dg.AssetExecutionContext, artifact_store: StorageResource,
                           **evaluations: pd.DataFrame) -> dg.MaterializeResult:
        """Every evaluation ever made, one row each (time, family, model version, data version,
        threshold, every metric), appended and never rewritten: evaluation_history.csv and
        evaluation_history.parquet in the artifact store, readable by Excel or PowerBI."""
        return record_history(context, artifact_store, [evaluations[name] for name in evaluation_ins])

    return evaluation_history


def record_history(context: dg.AssetExecutionContext, artifact_store: StorageResource,
                   evaluations: list[pd.DataFrame]) -> dg.MaterializeResult:
    store = artifact_store.open()
    rows = [r for e in evaluations for r in e.to_dict("records")]
    rows += [g for r in rows for g in group_history_rows(r, read_report(store, r["report_json"]))]
    new = append_history(store, rows)
    total = len(pd.read_parquet(store.open_read(HISTORY_PARQUET)))
    context.log.info(f"evaluation_history: {len(new)} new row(s), {total} in total")
    return dg.MaterializeResult(metadata=readable({
        "new_rows": len(new), "rows": total, "csv": dg.MetadataValue.path(f"{store.url}/{HISTORY_CSV}"),
        "parquet": dg.MetadataValue.path(f"{store.url}/{HISTORY_PARQUET}"),
        "latest": md_table(pd.DataFrame(rows)[["model_family", "model_version", "threshold", "accuracy", "recall",
                                               "f1", "roc_auc"]])}))


class ChampionConfig(dg.Config):
    metric: str = "roc_auc"
    """Validation metric that picks the candidate (never a test metric)."""
    min_defect_recall: float = 0.6
    """Gate: recall on the defect class (test split, at the chosen threshold) must reach this."""
    margin: float = 0.02
    """Gate: non-inferiority margin in test ROC AUC. The paired bootstrap 95% interval of (candidate -
    production) must stay above -margin; about the interval's half-width on ~450 test cells."""
    latency_budget_ms: float | None = 50.0
    """The champion is the best candidate on validation whose p99 latency (one full-size image, one
    client, measured through the served scorer at evaluation on this machine; the one from the model
    version's first evaluation, so re-evaluating unchanged models picks the same champion) fits this."""
    group_floor: float | None = 0.6
    """Gate: every group of the groupings named in the evaluation config (``groupings``) reaches this
    ``group_metric`` on the test split. Off while no grouping is named; None turns it off."""
    group_metric: Literal["roc_auc", "accuracy", "recall"] = "roc_auc"


def build_champion_model(evaluation_ins: dict[str, dg.AssetIn]) -> dg.AssetsDefinition:
    @dg.asset(name="champion_model", group_name="evaluation", kinds={"python"}, ins=evaluation_ins)
    def champion_model(context: dg.AssetExecutionContext, config: ChampionConfig, artifact_store: StorageResource,
                       **evaluations: pd.DataFrame) -> dg.Output[Champion]:
        """The best evaluated candidate by a validation metric, with the settings of its gates. Five
        blocking checks gate it (no leak, not worse than production, recall floor, stored model =
        trained model, per-group floor); a failing one stops everything downstream, deployment included."""
        return pick(context, config, artifact_store, [evaluations[name] for name in evaluation_ins])

    return champion_model


def pick(context: dg.AssetExecutionContext, config: ChampionConfig, artifact_store: StorageResource,
         evaluations: list[pd.DataFrame]) -> dg.Output[Champion]:
    table = pd.concat(evaluations, ignore_index=True)
    store = artifact_store.open()
    registry = ModelRegistry(store)
    history = pd.read_parquet(store.open_read(HISTORY_PARQUET)) if store.exists(HISTORY_PARQUET) else None
    champion = pick_champion(table, registry, config.metric, config.min_defect_recall, config.margin,
                             config.latency_budget_ms, history, config.group_floor, config.group_metric)
    card = registry.card(champion.model_version)
    context.log.info(f"champion candidate: {champion.model_version} ({champion.reason})")
    from defect_assets.ml.plots import tradeoff_png
    return dg.Output(champion, metadata=readable({
        "model_version": champion.model_version, "family": champion.family,
        "validation_metric": f"{config.metric} {significant(champion.validation_value):g}",
        "threshold": champion.threshold if champion.threshold is not None else 0.0,
        "threshold_rule": champion.threshold_method or "unrecorded",
        "trained_on_batches": ", ".join(card.data_version.batches),
        "label_versions": str(card.data_version.label_versions), "config": str(card.config),
        "test_metrics": md_table(pd.DataFrame([champion.test_metrics])),
        "why": champion.reason, "candidates": md_table(pd.DataFrame(champion.candidates)),
        "quality_vs_latency": md_png(tradeoff_png(champion.candidates, champion.latency_budget_ms,
                                                  champion.model_version, config.metric),
                                     "validation quality against p99 latency")}))


def build_evaluation_assets() -> list[dg.AssetsDefinition]:
    """Every family's evaluation asset, then the history and the champion over all of them, for the
    families registered now (called when the definitions are built)."""
    registered = families()
    ins = {f.evaluation: dg.AssetIn(f.evaluation) for f in registered}
    return [*(build_evaluation_asset(f) for f in registered), build_evaluation_history(ins), build_champion_model(ins)]
