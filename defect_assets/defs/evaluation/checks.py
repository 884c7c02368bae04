"""The champion's gates, each its own blocking asset check: when one fails, nothing downstream
of the champion (deployment) runs in that run. ``promotion_decision`` reads their latest
results for the current champion from the instance, so a deployment started in a later run
refuses a champion whose checks failed or never ran. The gate logic is in
``pipeline/champion.py``."""

import dagster as dg

from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline.champion import (
    EXPORT_PARITY,
    GATE_DESCRIPTIONS,
    GATES,
    NO_LEAK,
    NOT_WORSE,
    RECALL,
    Champion,
    GateResult,
    PromotionDecision,
    leak_gate,
    not_worse_gate,
    parity_gate,
    recall_gate,
)
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

CHAMPION_KEY = dg.AssetKey("champion_model")
PATCHES_IN = {"labeled_patches": dg.AssetIn("labeled_patches")}


def _result(gate: GateResult, champion: Champion) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(gate.passed), severity=dg.AssetCheckSeverity.ERROR,
                               description=gate.description,
                               metadata={**gate.metadata, "model_version": champion.model_version})


@dg.asset_check(asset=CHAMPION_KEY, name=NO_LEAK, blocking=True, description=GATE_DESCRIPTIONS[NO_LEAK],
                additional_ins=PATCHES_IN)
def champion_no_leak_check(champion_model: Champion,
                           labeled_patches: dict[str, ArrayTable]) -> dg.AssetCheckResult:
    return _result(leak_gate([ps.table for ps in labeled_patches.values()]), champion_model)


@dg.asset_check(asset=CHAMPION_KEY, name=NOT_WORSE, blocking=True,
                description=GATE_DESCRIPTIONS[NOT_WORSE], additional_ins=PATCHES_IN)
def champion_not_worse_check(champion_model: Champion, labeled_patches: dict[str, ArrayTable],
                             artifact_store: StorageResource) -> dg.AssetCheckResult:
    registry = ModelRegistry(artifact_store.open())
    return _result(not_worse_gate(champion_model, registry, labeled_patches), champion_model)


@dg.asset_check(asset=CHAMPION_KEY, name=RECALL, blocking=True, description=GATE_DESCRIPTIONS[RECALL])
def champion_recall_check(champion_model: Champion) -> dg.AssetCheckResult:
    return _result(recall_gate(champion_model), champion_model)


@dg.asset_check(asset=CHAMPION_KEY, name=EXPORT_PARITY, blocking=True,
                description=GATE_DESCRIPTIONS[EXPORT_PARITY], additional_ins=PATCHES_IN)
def champion_export_parity_check(champion_model: Champion, labeled_patches: dict[str, ArrayTable],
                                 artifact_store: StorageResource) -> dg.AssetCheckResult:
    store = artifact_store.open()
    return _result(parity_gate(champion_model, ModelRegistry(store), labeled_patches, store), champion_model)


champion_checks = [champion_no_leak_check, champion_not_worse_check, champion_recall_check,
                   champion_export_parity_check]


def promotion_decision(instance: dg.DagsterInstance, champion: Champion) -> PromotionDecision:
    """Each gate's latest result, counted only if it evaluated the latest champion
    materialization and names this champion's model version."""
    latest = instance.fetch_materializations(CHAMPION_KEY, limit=1).records
    current = latest[0].storage_id if latest else None
    gates: dict[str, bool | None] = {}
    for name in GATES:
        record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(CHAMPION_KEY, name))
        evaluation = record.event.asset_check_evaluation if record is not None and record.event else None
        target = evaluation.target_materialization_data if evaluation is not None else None
        version = evaluation.metadata.get("model_version") if evaluation is not None else None
        same = (target is not None and target.storage_id == current and version is not None
                and version.value == champion.model_version)
        gates[name] = bool(evaluation.passed) if same else None
    return PromotionDecision(champion, gates)
