"""The champion's gates as pure functions: the paired not-worse gate passes an identical retrain
every time and blocks a model trained on shuffled labels or not at all; the statistics under it (majority baseline,
bootstrap intervals, paired AUC difference) on hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from defect_assets.ml.evaluation import bootstrap_intervals, majority_baseline, paired_auc_difference
from defect_assets.pipeline.champion import Champion, not_worse_gate, pick_champion
from defect_assets.storage.formats import read_value
from defect_assets_tests.helpers.serving import model_registry


def test_majority_baseline_and_intervals_on_known_data():
    y = np.array([0] * 70 + [1] * 30)
    assert majority_baseline(y) == 0.7 and majority_baseline(np.array([2, 2, 1]), 3) == pytest.approx(2 / 3)
    rng = np.random.default_rng(1)
    score = np.where(y == 1, rng.uniform(0.3, 1, 100), rng.uniform(0, 0.7, 100))
    pred = score >= 0.5
    ci = bootstrap_intervals(y, score, pred == y)
    acc, auc = float((pred == y).mean()), skm.roc_auc_score(y, score)
    assert ci["accuracy"][0] < acc < ci["accuracy"][1] and ci["roc_auc"][0] < auc < ci["roc_auc"][1]
    assert 0.05 < ci["accuracy"][1] - ci["accuracy"][0] < 0.3  # about +-2 standard errors of 100 items
    assert bootstrap_intervals(y, score, pred == y) == ci  # seeded: the same interval every time


def test_paired_difference_is_zero_for_the_same_scores_and_clearly_negative_for_noise():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    good = y + rng.normal(0, 0.6, 300)
    same = paired_auc_difference(y, good, good.copy())
    assert same["delta"] == same["low"] == same["high"] == 0.0
    noise_scores = rng.normal(size=300)
    noise = paired_auc_difference(y, noise_scores, good)
    assert noise["delta"] == pytest.approx(skm.roc_auc_score(y, noise_scores) - skm.roc_auc_score(y, good))
    assert noise["low"] < noise["delta"] < noise["high"] < -0.2
    with pytest.raises(ValueError, match="both classes"):
        paired_auc_difference(np.zeros(5), np.arange(5), np.arange(5))


def champion_for(registry, version: str, margin: float = 0.02) -> Champion:
    return Champion(model_version=version, family="tiny_cnn", metric="roc_auc", validation_value=1.0,
                    threshold=0.5, evaluation_id="", report_html="", test_metrics={"recall": 1.0},
                    min_defect_recall=0.6, margin=margin)


@pytest.mark.slow
def test_the_paired_gate_passes_an_identical_retrain_every_time_and_blocks_a_shuffled_label_one(tmp_path):
    from defect_assets.pipeline.tiny import register_tiny_model

    store, registry, versions = model_registry(tmp_path)
    patches = {"synthetic": read_value(store, "labeled_patches/synthetic")}
    registry.promote(versions["a"], threshold=0.5)
    retrain = register_tiny_model(registry, patches, epochs=3, seed=0)  # same data, config, seed as "a"
    assert retrain.version != versions["a"]
    verdicts = [not_worse_gate(champion_for(registry, retrain.version), registry, patches) for _ in range(3)]
    assert all(v.passed for v in verdicts)
    assert {(v.metadata["difference_ci95_low"], v.metadata["difference_ci95_high"]) for v in verdicts} == {(0.0, 0.0)}

    shuffled = register_tiny_model(registry, patches, epochs=3, seed=0, shuffle_labels=True)
    verdict = not_worse_gate(champion_for(registry, shuffled.version), registry, patches)
    assert verdict.passed is False and verdict.metadata["difference_ci95_low"] < -0.02, verdict.description

    untrained = not_worse_gate(champion_for(registry, versions["b"]), registry, patches)
    assert untrained.passed is False and untrained.metadata["difference_ci95_high"] < 0
    assert "reaches below -0.02" in untrained.description
    assert not_worse_gate(champion_for(registry, versions["b"], margin=1.0), registry, patches).passed


TEST_FIGURES = {"accuracy": 0.9, "recall": 0.8, "f1": 0.85, "roc_auc": 0.9}


def test_the_budget_judges_a_model_version_by_its_first_measured_latency(tmp_path):
    """The budget judges a model version by the p99 of its first evaluation: the same models
    re-measured on a busier (or quieter) machine give the same champion; without the earlier
    reading the slower-now one is passed over, and the reason says which figure was judged."""
    import pandas as pd

    from defect_assets.storage.local import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(LocalObjectStore(tmp_path / "artifacts"))  # picking reads only the cards
    card = {"kind": "features+linear", "task": "binary", "classes": ["ok", "defect"],
            "input": {"size": 32, "channels": 1}}
    versions = {name: registry.register("elastic_net", {"model.npz": name.encode()}, {**card, "validation": {
                    "accuracy": 0.8, "balanced_accuracy": 0.8, "log_loss": 0.4, "roc_auc": auc}}).version
                for name, auc in [("better", 0.93), ("worse", 0.81)]}
    better, worse = "better", "worse"
    now = pd.DataFrame([
        {"model_family": "tiny_cnn", "model_version": versions[better], "latency_p99_ms": 80.0, **TEST_FIGURES},
        {"model_family": "tiny_cnn", "model_version": versions[worse], "latency_p99_ms": 10.0, **TEST_FIGURES}])
    alone = pick_champion(now, registry, latency_budget_ms=50.0)
    assert alone.model_version == versions[worse] and "its p99 80.0 ms" in alone.reason

    earlier = pd.DataFrame({"model_version": [versions[better], versions[better], versions[worse], "other"],
                            "latency_p99_ms": [42.0, 30.0, 12.0, 1.0]})
    picked = pick_champion(now, registry, latency_budget_ms=50.0, history=earlier)
    assert picked.model_version == versions[better], picked.reason
    assert "p99 42.0 ms at its first evaluation, 80.0 ms now" in picked.reason
    by_version = {c["model_version"]: c for c in picked.candidates}
    assert [by_version[versions[k]]["budget_p99_ms"] for k in (better, worse)] == [42.0, 12.0]
    assert by_version[versions[better]]["latency_p99_ms"] == 80.0  # the figure measured now is kept as measured

    nothing_fits = pick_champion(now.assign(latency_p99_ms=[90.0, 70.0]), registry, latency_budget_ms=50.0,
                                 history=earlier.assign(latency_p99_ms=[60.0, 20.0, 75.0, 1.0]))
    assert nothing_fits.model_version == versions[better]  # the fastest at first evaluation: 60 ms against 70
    assert nothing_fits.reason.startswith(
        "no candidate fits the 50 ms p99 budget; the fastest (p99 60.0 ms at its first evaluation")
