"""Evaluation assets (one per model family, built by one factory), the append-only
evaluation history, and the champion with the blocking checks that gate deployment."""

import dagster as dg
import numpy as np
import pandas as pd

from defect_assets.defs.metadata import md_png, md_table
from defect_assets.defs.patches.assets import stored_patch_tables
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.splits import find_leaks
from defect_assets.pipeline.evaluate import EvalSettings, append_history, evaluate, history_row, metric_table, scorer_for
from defect_assets.pipeline.patching import patches_of
from defect_assets.pipeline.training import split_data
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

FAMILIES = {"scratch_cnn": "scratch_cnn_model", "fine_tuned_vgg16": "fine_tuned_vgg16_model",
            "elastic_net": "elastic_net_model"}

CHECK_NO_LEAK = "no_image_in_two_splits"
CHECK_NOT_WORSE = "not_worse_than_production"
CHECK_RECALL = "defect_recall_above_floor"
CHECK_EXPORT = "stored_model_matches_trained_model"


class EvaluationConfig(dg.Config):
    threshold_method: str = "max_f1"
    """'max_f1' (best F1 on validation) or 'cost' (fewest cost_missed_defect*FN + cost_false_alarm*FP)."""
    cost_missed_defect: float = 5.0
    cost_false_alarm: float = 1.0


def build_evaluation_asset(family: str, model_asset: str) -> dg.AssetsDefinition:
    @dg.asset(name=f"{family}_evaluation", group_name="evaluation", kinds={"scikitlearn", "html"},
              description=(f"The {family} model on the held-out test split: accuracy, balanced accuracy, precision, "
                           "recall, F1, ROC AUC, PR AUC, confusion matrix (per class for multi-class), with the "
                           "threshold chosen on the validation split. Report as JSON and self-contained HTML."),
              ins={"model": dg.AssetIn(model_asset), "labeled_patches": dg.AssetIn("labeled_patches")})
    def _evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, model: pd.DataFrame,
                    labeled_patches: dict[str, ArrayTable], artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
        store = artifact_store.open()
        version = str(model["version"].iloc[0])
        report, pngs = evaluate(ModelRegistry(store), version, labeled_patches,
                                EvalSettings(config.threshold_method, config.cost_missed_defect, config.cost_false_alarm), store)
        context.log.info(f"{family} {version} on the test split: " + ", ".join(
            f"{k} {v:.3f}" for k, v in metric_table(report).iloc[0].items()))
        cm = pd.DataFrame(report["confusion_matrix"], columns=[f"pred {c}" for c in report["classes"]])
        cm.insert(0, "true", report["classes"])
        meta = {"model_version": version, "threshold": report.get("threshold") or 0.0,
                **{k: float(v) for k, v in metric_table(report).iloc[0].items()},
                "metrics": md_table(metric_table(report).round(4)), "confusion_matrix": md_table(cm),
                "report_html": dg.MetadataValue.path(f"{store.url}/{report['report_html']}"),
                "test_patches": report["n"], "data_version": report["data_version"]["id"]}
        for name, png in pngs.items():
            meta[f"plot_{name}"] = md_png(png, name.replace("_", " "))
        if report["task"] == "multiclass":
            meta["per_class"] = md_table(pd.DataFrame(report["per_class"]).round(4))
        return dg.Output(pd.DataFrame([history_row(report)]), metadata=meta)

    return _evaluation


evaluation_assets = [build_evaluation_asset(f, a) for f, a in FAMILIES.items()]


@dg.asset(group_name="evaluation", kinds={"parquet", "csv"})
def evaluation_history(context: dg.AssetExecutionContext, artifact_store: StorageResource,
                       scratch_cnn_evaluation: pd.DataFrame, fine_tuned_vgg16_evaluation: pd.DataFrame,
                       elastic_net_evaluation: pd.DataFrame) -> dg.MaterializeResult:
    """Every evaluation ever made, one row each (time, family, model version, data version,
    threshold, every metric), appended and never rewritten: evaluation_history.csv and
    evaluation_history.parquet in the artifact store, readable by Excel or PowerBI."""
    store = artifact_store.open()
    evaluations = [scratch_cnn_evaluation, fine_tuned_vgg16_evaluation, elastic_net_evaluation]
    rows = [r for df in evaluations for r in df.to_dict("records")]
    new = append_history(store, rows)
    from defect_assets.pipeline.evaluate import HISTORY_CSV, HISTORY_PARQUET

    total = len(pd.read_parquet(store.open_read(HISTORY_PARQUET)))
    context.log.info(f"evaluation_history: {len(new)} new row(s), {total} in total")
    return dg.MaterializeResult(metadata={
        "new_rows": len(new), "rows": total, "csv": dg.MetadataValue.path(f"{store.url}/{HISTORY_CSV}"),
        "parquet": dg.MetadataValue.path(f"{store.url}/{HISTORY_PARQUET}"),
        "latest": md_table(pd.DataFrame(rows)[["model_family", "model_version", "threshold", "accuracy", "recall",
                                               "f1", "roc_auc"]].round(4))})


class ChampionConfig(dg.Config):
    metric: str = "roc_auc"
    """Validation metric that picks the candidate (never a test metric)."""
    min_defect_recall: float = 0.6
    """Check: recall on the defect class (test split, at the chosen threshold) must reach this."""
    tolerance: float = 0.0
    """Check: the candidate may trail production by at most this much test ROC AUC."""


@dg.asset(group_name="evaluation", kinds={"python"},
          check_specs=[dg.AssetCheckSpec(c, asset="champion_model", blocking=True, description=d) for c, d in (
              (CHECK_NO_LEAK, "No source image has patches in two splits"),
              (CHECK_NOT_WORSE, "At least as good as the production model on the same test split"),
              (CHECK_RECALL, "Defect recall on the test split at or above the floor"),
              (CHECK_EXPORT, "The stored artifact, loaded as the service loads it, predicts what the trained model did"))])
def champion_model(context: dg.AssetExecutionContext, config: ChampionConfig, labeled_patches: dict[str, ArrayTable],
                   artifact_store: StorageResource, scratch_cnn_evaluation: pd.DataFrame,
                   fine_tuned_vgg16_evaluation: pd.DataFrame, elastic_net_evaluation: pd.DataFrame):
    """The best candidate by a validation metric, gated by four blocking checks; a failing check
    stops everything downstream (deployment) and says why."""
    store = artifact_store.open()
    registry = ModelRegistry(store)
    table = pd.concat([scratch_cnn_evaluation, fine_tuned_vgg16_evaluation, elastic_net_evaluation], ignore_index=True)
    cards = {v: registry.card(v) for v in table["model_version"]}
    table["val_metric"] = [cards[v]["validation"].get(config.metric, np.nan) for v in table["model_version"]]
    best = table.sort_values("val_metric", ascending=False, kind="stable").iloc[0]
    version, card = str(best["model_version"]), cards[str(best["model_version"])]
    context.log.info(f"champion candidate: {version} (validation {config.metric} {best['val_metric']:.4f})")

    leaks = find_leaks(list(stored_patch_tables(store).values()))
    checks = [dg.AssetCheckResult(check_name=CHECK_NO_LEAK, passed=leaks.empty, metadata={"leaked_images": len(leaks)},
                                  description=None if leaks.empty else f"{len(leaks)} image(s) in two splits")]

    candidate = scorer_for(registry, version)
    prod = registry.production()
    test = split_data(labeled_patches, "test", card["task"], card["classes"])
    from defect_assets.ml.metrics import summary_metrics

    cand_auc = summary_metrics(test.y, candidate.predict_proba(test.x))["roc_auc"]
    if prod is None:
        checks.append(dg.AssetCheckResult(check_name=CHECK_NOT_WORSE, passed=True, metadata={"candidate_roc_auc": cand_auc},
                                          description="nothing in production yet"))
    else:
        prod_scorer = scorer_for(registry, prod["version"])
        prod_auc = summary_metrics(test.y, prod_scorer.predict_proba(test.x))["roc_auc"] \
            if prod_scorer.classes == candidate.classes else float("-inf")
        ok = cand_auc >= prod_auc - config.tolerance
        checks.append(dg.AssetCheckResult(
            check_name=CHECK_NOT_WORSE, passed=bool(ok),
            metadata={"candidate_roc_auc": cand_auc, "production_roc_auc": prod_auc, "production_version": prod["version"]},
            description=None if ok else f"test ROC AUC {cand_auc:.4f} < production {prod['version']} {prod_auc:.4f}"))

    recall = float(best["recall"])
    checks.append(dg.AssetCheckResult(
        check_name=CHECK_RECALL, passed=bool(recall >= config.min_defect_recall),
        metadata={"recall": recall, "floor": config.min_defect_recall},
        description=None if recall >= config.min_defect_recall else f"defect recall {recall:.3f} < floor {config.min_defect_recall}"))

    golden = card.get("golden", {})
    ids = golden.get("patch_ids", [])
    by_id = {}
    for ps in labeled_patches.values():
        pos = {pid: i for i, pid in enumerate(ps.table["patch_id"])}
        sel = [pid for pid in ids if pid in pos]
        if sel:
            px = np.asarray(patches_of(ps))[[pos[p] for p in sel]]
            by_id.update(dict(zip(sel, px)))
    found = [p for p in ids if p in by_id]
    if found:
        got = candidate.predict_proba(np.stack([by_id[p] for p in found]))
        want = np.asarray(golden["proba"])[[ids.index(p) for p in found]]
        diff = float(np.abs(got - want).max())
    else:
        diff = float("inf")
    export_ok = bool(found) and diff <= 1e-4
    checks.append(dg.AssetCheckResult(
        check_name=CHECK_EXPORT, passed=export_ok, metadata={"golden_patches": len(found), "max_abs_difference": diff},
        description=None if export_ok else (f"stored model differs from the trained one by {diff:.2g}" if found
                                            else "no golden patches found to compare")))

    failed = [c.check_name for c in checks if not c.passed]
    yield dg.Output(pd.DataFrame([{**best.to_dict(), "test_roc_auc_recomputed": cand_auc,
                                   "failed_checks": ",".join(failed)}]), metadata={
        "model_version": version, "family": card["family"], "validation_metric": f"{config.metric} {best['val_metric']:.4f}",
        "threshold": float(best["threshold"]) if pd.notna(best["threshold"]) else 0.0,
        "trained_on_batches": ", ".join(card["data_version"]["batches"]),
        "label_versions": str(card["data_version"]["label_versions"]), "config": str(card["config"]),
        "candidates": md_table(table[["model_family", "model_version", "val_metric", "accuracy", "recall", "f1", "roc_auc"]].round(4)),
        "failed_checks": ", ".join(failed) or "none"})
    for c in checks:
        yield c
