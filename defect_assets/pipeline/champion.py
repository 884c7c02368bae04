"""The champion and the gates in front of production, without Dagster.

``pick_champion`` chooses the best evaluated candidate by a validation metric (never a test
metric) and returns a typed ``Champion``. Each gate is a function returning a ``GateResult``;
the Dagster layer runs each as its own blocking asset check. ``PromotionDecision`` is what
deployment reads: the champion plus the outcome of every gate, approved only when all passed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from defect_assets.ml.evaluation import paired_auc_difference
from defect_assets.ml.metrics import summary_metrics
from defect_assets.ml.scorer import load_registered
from defect_assets.ml.splits import find_group_leaks, find_leaks
from defect_assets.pipeline.golden import golden_set
from defect_assets.pipeline.training import split_data
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

NO_LEAK = "no_image_in_two_splits"
NOT_WORSE = "not_worse_than_production"
RECALL = "defect_recall_above_floor"
EXPORT_PARITY = "stored_model_matches_trained_model"
GROUP_FLOOR = "every_group_above_floor"
GATES = (NO_LEAK, NOT_WORSE, RECALL, EXPORT_PARITY, GROUP_FLOOR)
GATE_DESCRIPTIONS = {
    NO_LEAK: "No source image has patches in two splits",
    NOT_WORSE: "Not worse than the production model on the same test images: the paired bootstrap 95% interval "
               "of the ROC AUC difference stays above -margin",
    RECALL: "Defect recall on the test split at or above the floor",
    EXPORT_PARITY: "The stored artifact, loaded as the service loads it and fed the full-size source images, "
                   "predicts what the trained model did",
    GROUP_FLOOR: "Every group of the named groupings (EvaluationConfig.groupings) reaches the per-group floor on "
                 "the test split; passes with nothing to judge when no grouping is named",
}
TEST_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
PARITY_TOLERANCE = 1e-4


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Champion:
    """The candidate for production and the settings its gates apply."""

    model_version: str
    family: str
    metric: str
    validation_value: float
    threshold: float | None
    """Binary: the defect threshold chosen on validation; None: arg-max."""
    evaluation_id: str
    report_html: str
    test_metrics: dict[str, float | None]
    min_defect_recall: float
    margin: float
    """Non-inferiority margin of the not-worse gate, in test ROC AUC."""
    candidates: list[dict] = field(default_factory=list)
    latency_budget_ms: float | None = None
    """p99 milliseconds for one full-size image at one client that a candidate must fit (None: any)."""
    reason: str = ""
    """Why this candidate: the best on validation within the latency budget, or the fallback."""
    threshold_method: str = ""
    """The rule that chose ``threshold`` on validation (max_f1, cost; good_quantile(q) when the
    validation split held no defect and the model trains on good images only)."""
    report_json: str = ""
    """The champion's stored evaluation report (its per-group figures are what the group gate reads)."""
    group_floor: float | None = None
    """Per-group floor on ``group_metric`` (None: the group gate is off)."""
    group_metric: str = "roc_auc"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> Champion:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    description: str | None = None
    """Why it failed (None when it passed)."""
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the champion may go to production: every gate ran on this champion and passed."""

    champion: Champion
    gates: dict[str, bool | None]
    """Gate name -> passed, or None when it has not run on this champion."""

    @property
    def approved(self) -> bool:
        return all(self.gates.get(g) is True for g in GATES)

    @property
    def failed(self) -> list[str]:
        return [g for g in GATES if self.gates.get(g) is False]

    @property
    def missing(self) -> list[str]:
        return [g for g in GATES if self.gates.get(g) is None]

    def reason(self) -> str:
        parts = []
        if self.failed:
            parts.append(f"champion checks failed ({', '.join(self.failed)})")
        if self.missing:
            parts.append(f"champion checks have not run on it ({', '.join(self.missing)})")
        return "; ".join(parts) or "approved"


def budget_latency(evaluations: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.Series:
    """Per row of ``evaluations``: the p99 the latency budget judges for its model version, the one
    measured at the version's first evaluation on record in ``history`` (this evaluation's when it
    has none; NaN when never measured).

    A model's cost does not change between two evaluations; what changes on a shared machine is
    the other work beside it. Judging a version once makes the choice stable: re-evaluating
    unchanged models, on a busier or a quieter machine, picks the same champion (a new version is
    judged when it is first evaluated)."""
    now = pd.to_numeric(evaluations.get("latency_p99_ms", pd.Series(np.nan, index=evaluations.index)),
                        errors="coerce")
    if history is None or not len(history) or "latency_p99_ms" not in history:
        return now.rename("budget_p99_ms")
    measured = history.assign(p99=pd.to_numeric(history["latency_p99_ms"], errors="coerce")).dropna(subset=["p99"])
    first = measured.groupby("model_version", sort=False)["p99"].first()  # rows are appended in time order
    return evaluations["model_version"].map(first).fillna(now).rename("budget_p99_ms")


def pick_champion(evaluations: pd.DataFrame, registry: ModelRegistry, metric: str = "roc_auc",
                  min_defect_recall: float = 0.6, margin: float = 0.02,
                  latency_budget_ms: float | None = None, history: pd.DataFrame | None = None,
                  group_floor: float | None = None, group_metric: str = "roc_auc") -> Champion:
    """The evaluated candidate with the best validation ``metric`` (ties: the first listed) among
    those whose p99 latency (one full-size image at one client; the one measured at the model
    version's first evaluation, see ``budget_latency``, with earlier evaluations from ``history``) fits
    ``latency_budget_ms``. When none fits, the fastest candidate, and the reason says so."""
    if not len(evaluations):
        raise ValueError("no evaluated candidate to choose a champion from")
    table = evaluations.reset_index(drop=True).copy()
    cards = {v: registry.card(v) for v in table["model_version"]}
    table["val_metric"] = [cards[v].validation.get(metric, np.nan) for v in table["model_version"]]
    if "latency_p99_ms" not in table:
        table["latency_p99_ms"] = np.nan
    table["budget_p99_ms"] = budget_latency(table, history)
    p99 = table["budget_p99_ms"]
    if latency_budget_ms is None:
        table["within_budget"] = True
    else:  # an unmeasured latency (NaN) does not fit a budget
        table["within_budget"] = (p99 <= latency_budget_ms).to_numpy()
    ranked = table.sort_values("val_metric", ascending=False, kind="stable")
    fits = ranked[ranked["within_budget"]]
    best_overall = ranked.iloc[0]
    if len(fits):
        best = fits.iloc[0]
        reason = f"best validation {metric} ({best['val_metric']:.4f})"
        if latency_budget_ms is not None:
            reason += f" within the {latency_budget_ms:g} ms p99 budget ({_p99_text(best)})"
            if best["model_version"] != best_overall["model_version"]:
                reason += (f"; {best_overall['model_family']} was better on validation "
                           f"({best_overall['val_metric']:.4f}) but its {_p99_text(best_overall)}")
    else:
        best = table.iloc[int(p99.fillna(np.inf).to_numpy().argmin())]
        reason = (f"no candidate fits the {latency_budget_ms:g} ms p99 budget; the fastest "
                  f"({_p99_text(best)}, validation {metric} {best['val_metric']:.4f})")
    cols = ["model_family", "model_version", "val_metric", "latency_p99_ms", "budget_p99_ms", "within_budget",
            "accuracy", "recall", "f1", "roc_auc"]
    candidates = [{k: (v if isinstance(v, (str, bool)) else _number(v)) for k, v in row.items()}
                  for row in table[cols].to_dict("records")]
    return Champion(
        model_version=str(best["model_version"]), family=str(best["model_family"]), metric=metric,
        validation_value=float(best["val_metric"]), threshold=_number(best.get("threshold")),
        evaluation_id=str(best.get("evaluation_id", "")), report_html=str(best.get("report_html", "")),
        test_metrics={k: _number(best[k]) for k in TEST_METRICS if k in best.index},
        min_defect_recall=float(min_defect_recall), margin=float(margin), candidates=candidates,
        latency_budget_ms=None if latency_budget_ms is None else float(latency_budget_ms), reason=reason,
        threshold_method=str(best.get("threshold_method", "") or ""),
        report_json=str(best.get("report_json", "") or ""),
        group_floor=None if group_floor is None else float(group_floor), group_metric=group_metric)


def _p99_text(row) -> str:
    now, low = row["latency_p99_ms"], row["budget_p99_ms"]
    if pd.isna(low):
        return "p99 not measured"
    if pd.isna(now) or abs(float(now) - float(low)) < 0.05:
        return f"p99 {low:.1f} ms"
    return f"p99 {low:.1f} ms at its first evaluation, {now:.1f} ms now"


def leak_gate(patch_tables: list[pd.DataFrame]) -> GateResult:
    """No source image, and no group (part, module), has patches in two splits, across every
    batch the models saw."""
    leaks, group_leaks = find_leaks(patch_tables), find_group_leaks(patch_tables)
    ok = leaks.empty and group_leaks.empty
    why = None if ok else f"{len(leaks)} image(s) and {len(group_leaks)} group(s) in two splits"
    return GateResult(NO_LEAK, ok, why, {"leaked_images": len(leaks), "leaked_groups": len(group_leaks),
                                         "batches": len(patch_tables)})


def recall_gate(champion: Champion) -> GateResult:
    recall = champion.test_metrics.get("recall")
    ok = recall is not None and recall >= champion.min_defect_recall
    shown = "undefined" if recall is None else f"{recall:.3f}"
    rule = champion.threshold_method or "unrecorded"
    why = None if ok else (f"defect recall {shown} < floor {champion.min_defect_recall} (threshold "
                           f"chosen by {rule})")
    return GateResult(RECALL, ok, why, {"recall": recall if recall is not None else float("nan"),
                                        "floor": champion.min_defect_recall, "threshold_rule": rule})


def not_worse_gate(champion: Champion, registry: ModelRegistry, patch_sets: dict[str, ArrayTable]) -> GateResult:
    """Candidate vs production on the same test patches: the paired bootstrap interval of the
    difference in ROC AUC (of the defect score) must not reach below -margin. The bootstrap is
    seeded, so the same two models on the same images give the same verdict every time, and an
    identical retrain (difference 0 on every resample) always passes."""
    candidate = load_registered(registry, champion.model_version)
    card = candidate.card
    test = split_data(patch_sets, "test", card.task, card.classes)
    cand_p = candidate.predict_proba(test.x)
    cand_auc = summary_metrics(test.y, cand_p)["roc_auc"]
    prod = registry.production()
    if prod is None:
        return GateResult(NOT_WORSE, True, None, {"candidate_roc_auc": cand_auc, "production": "none yet"})
    prod_scorer = load_registered(registry, prod["version"])
    if prod_scorer.classes != candidate.classes:
        return GateResult(NOT_WORSE, False, f"production {prod['version']} has classes {prod_scorer.classes}, "
                          f"the candidate {candidate.classes}: not comparable", {"production_version": prod["version"]})
    prod_p = prod_scorer.predict_proba(test.x)
    defect = (test.y > 0).astype(int)  # binary: class 1; multi-class: any class but the first
    diff = paired_auc_difference(defect, 1 - cand_p[:, 0], 1 - prod_p[:, 0])
    ok = bool(diff["low"] >= -champion.margin)
    meta = {"candidate_roc_auc": cand_auc, "production_roc_auc": summary_metrics(test.y, prod_p)["roc_auc"],
            "production_version": prod["version"], "auc_difference": diff["delta"],
            "difference_ci95_low": diff["low"], "difference_ci95_high": diff["high"], "margin": champion.margin,
            "test_patches": len(test.y), "bootstrap_resamples": diff["resamples"]}
    why = None if ok else (f"test ROC AUC {diff['delta']:+.4f} vs production {prod['version']}, 95% interval "
                           f"[{diff['low']:+.4f}, {diff['high']:+.4f}] reaches below -{champion.margin}")
    return GateResult(NOT_WORSE, ok, why, meta)


def parity_gate(champion: Champion, registry: ModelRegistry, patch_sets: dict[str, ArrayTable],
                store: ObjectStore, tolerance: float = PARITY_TOLERANCE) -> GateResult:
    """The stored artifact, loaded through the seam as the service loads it (hash check,
    safe_mode, compiled), fed the golden patches' full-size source images, gives the
    probabilities the in-memory model gave at training."""
    try:
        scorer = load_registered(registry, champion.model_version, compiled=True)
    except Exception as e:  # noqa: BLE001 - a model that cannot load fails the gate with the reason
        return GateResult(EXPORT_PARITY, False, f"the stored model does not load: {type(e).__name__}: {e}"[:500],
                          {"golden_patches": 0})
    golden = golden_set(scorer.card, patch_sets, store)
    if not len(golden):
        return GateResult(EXPORT_PARITY, False, "no golden patch with its source image found to compare",
                          {"golden_patches": 0})
    diff = float(np.abs(golden.score(scorer) - golden.expected).max())
    ok = diff <= tolerance
    whole = sum(k == "image" for k in golden.kinds)
    return GateResult(EXPORT_PARITY, ok,
                      None if ok else f"stored model differs from the trained one by {diff:.3g} "
                                      f"(tolerance {tolerance:g})",
                      {"golden_patches": len(golden), "from_whole_images": whole, "max_abs_difference": diff})


def group_floor_gate(groups: list[dict] | None, metric: str = "roc_auc", floor: float | None = None) -> GateResult:
    """Every group of the named groupings reaches ``floor`` on ``metric``. Off (passes) when no floor
    is set or the report names no grouping. A group whose figure is undefined (for the AUC: a group
    with one class in the test split) is not judged; the metadata counts it, and the description
    names it, so an unjudged group is seen."""
    if floor is None or not groups:
        return GateResult(GROUP_FLOOR, True, None, {"floor": float("nan") if floor is None else floor, "groups": 0,
                                                    "below": 0, "undefined": 0})

    undefined = [g for g in groups if not math.isfinite(float(g.get(metric, float("nan"))))]
    low = [g for g in groups if g not in undefined and float(g[metric]) < floor]
    shown = ", ".join(f"{g['grouping']}={g['group']}: {metric} {float(g[metric]):.3f}" for g in low)
    unjudged = ", ".join(f"{g['grouping']}={g['group']}" for g in undefined)
    why = f"below the per-group floor {metric} >= {floor}: {shown}" if low else None
    if unjudged:
        why = (why + "; " if why else "") + f"not judged ({metric} undefined): {unjudged}"
    return GateResult(GROUP_FLOOR, not low, why, {"floor": floor, "metric": metric, "groups": len(groups),
                                                  "below": len(low), "undefined": len(undefined)})


def group_gate(champion: Champion, store: ObjectStore) -> GateResult:
    """``group_floor_gate`` on the per-group figures of the champion's stored evaluation report."""
    from defect_assets.pipeline.evaluate import read_report

    report = read_report(store, champion.report_json) if champion.report_json else None
    return group_floor_gate(report.groups if report is not None else None, champion.group_metric,
                            champion.group_floor)
