"""The champion's gates, each its own blocking asset check: when one fails, nothing downstream
of the champion (deployment) runs in that run. Each check also records its result in the
artifact store (``champion/gates/<gate>.json``: passed, the model version and the champion
materialization it judged, written atomically), and ``promotion_decision`` reads those records
for the current champion, so a deployment started in a later run refuses a champion whose
checks failed or never ran. Only public Dagster APIs are used: the instance's latest champion
materialization (``fetch_materializations``); the check evaluation records of the event log have
no public reader in Dagster 1.13. The gate logic is in ``pipeline/champion.py``."""

import dagster as dg

from defect_assets.defs.metadata import readable
from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline.champion import (
    EXPORT_PARITY,
    GATE_DESCRIPTIONS,
    GATES,
    GROUP_FLOOR,
    NO_LEAK,
    NOT_WORSE,
    RECALL,
    Champion,
    GateResult,
    PromotionDecision,
    group_gate,
    leak_gate,
    not_worse_gate,
    parity_gate,
    recall_gate,
)
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable, read_json, write_json
from defect_assets.storage.layout import champion_gate_key
from defect_assets.storage.registry import ModelRegistry

CHAMPION_KEY = dg.AssetKey("champion_model")
PATCHES_IN = {"labeled_patches": dg.AssetIn("labeled_patches")}


def latest_champion_id(instance: dg.DagsterInstance) -> int | None:
    """The event-log storage id of the latest champion materialization (None: never built)."""
    latest = instance.fetch_materializations(CHAMPION_KEY, limit=1, ascending=False).records
    return latest[0].storage_id if latest else None


def _result(context: dg.AssetCheckExecutionContext, store: ObjectStore, name: str, gate: GateResult,
            champion: Champion) -> dg.AssetCheckResult:
    """The check's result, recorded first for a deployment in a later run to read."""
    write_json(store, champion_gate_key(name), {
        "gate": name, "passed": bool(gate.passed), "model_version": champion.model_version,
        "champion_materialization": latest_champion_id(context.instance), "run_id": context.run.run_id,
        "description": gate.description})
    return dg.AssetCheckResult(passed=bool(gate.passed), severity=dg.AssetCheckSeverity.ERROR,
                               description=gate.description,
                               metadata=readable({**gate.metadata, "model_version": champion.model_version}))


@dg.asset_check(asset=CHAMPION_KEY, name=NO_LEAK, blocking=True, description=GATE_DESCRIPTIONS[NO_LEAK],
                additional_ins=PATCHES_IN)
def champion_no_leak_check(context: dg.AssetCheckExecutionContext, champion_model: Champion,
                           labeled_patches: dict[str, ArrayTable], artifact_store: StorageResource
                           ) -> dg.AssetCheckResult:
    gate = leak_gate([ps.table for ps in labeled_patches.values()])
    return _result(context, artifact_store.open(), NO_LEAK, gate, champion_model)


@dg.asset_check(asset=CHAMPION_KEY, name=NOT_WORSE, blocking=True,
                description=GATE_DESCRIPTIONS[NOT_WORSE], additional_ins=PATCHES_IN)
def champion_not_worse_check(context: dg.AssetCheckExecutionContext, champion_model: Champion,
                             labeled_patches: dict[str, ArrayTable], artifact_store: StorageResource
                             ) -> dg.AssetCheckResult:
    store = artifact_store.open()
    gate = not_worse_gate(champion_model, ModelRegistry(store), labeled_patches)
    return _result(context, store, NOT_WORSE, gate, champion_model)


@dg.asset_check(asset=CHAMPION_KEY, name=RECALL, blocking=True, description=GATE_DESCRIPTIONS[RECALL])
def champion_recall_check(context: dg.AssetCheckExecutionContext, champion_model: Champion,
                          artifact_store: StorageResource) -> dg.AssetCheckResult:
    return _result(context, artifact_store.open(), RECALL, recall_gate(champion_model), champion_model)


@dg.asset_check(asset=CHAMPION_KEY, name=EXPORT_PARITY, blocking=True,
                description=GATE_DESCRIPTIONS[EXPORT_PARITY], additional_ins=PATCHES_IN)
def champion_export_parity_check(context: dg.AssetCheckExecutionContext, champion_model: Champion,
                                 labeled_patches: dict[str, ArrayTable], artifact_store: StorageResource
                                 ) -> dg.AssetCheckResult:
    store = artifact_store.open()
    gate = parity_gate(champion_model, ModelRegistry(store), labeled_patches, store)
    return _result(context, store, EXPORT_PARITY, gate, champion_model)


@dg.asset_check(asset=CHAMPION_KEY, name=GROUP_FLOOR, blocking=True, description=GATE_DESCRIPTIONS[GROUP_FLOOR])
def champion_group_floor_check(context: dg.AssetCheckExecutionContext, champion_model: Champion,
                               artifact_store: StorageResource) -> dg.AssetCheckResult:
    store = artifact_store.open()
    return _result(context, store, GROUP_FLOOR, group_gate(champion_model, store), champion_model)


champion_checks = [champion_no_leak_check, champion_not_worse_check, champion_recall_check,
                   champion_export_parity_check, champion_group_floor_check]


def promotion_decision(instance: dg.DagsterInstance, store: ObjectStore, champion: Champion) -> PromotionDecision:
    """Each gate's latest recorded result, counted only if it judged the latest champion
    materialization and names this champion's model version."""
    current = latest_champion_id(instance)
    gates: dict[str, bool | None] = {}
    for name in GATES:
        key = champion_gate_key(name)
        record = read_json(store, key) if store.exists(key) else None
        same = (record is not None and current is not None and record.get("champion_materialization") == current
                and record.get("model_version") == champion.model_version)
        gates[name] = bool(record["passed"]) if same else None
    return PromotionDecision(champion, gates)
