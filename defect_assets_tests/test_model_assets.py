"""The model assets in Dagster on small generated batches: three registered families with
their data version, and backbone features computed once per batch."""

import dagster as dg
import numpy as np
import pytest

from defect_assets.defs.models.assets import build_model_assets
from defect_assets.defs.partitions import BATCHES
from defect_assets.ml.scorer import load_registered
from defect_assets.ml.synthetic import write_synthetic_surfaces
from defect_assets.pipeline.family_registry import families
from defect_assets.pipeline.golden import golden_set
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import current_version, read_value
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.helpers.model_assets import BATCH_ASSETS, TINY, prepared_batches

MODELS = build_model_assets()
elastic_net_model = next(a for a in MODELS if a.key.to_user_string() == "elastic_net_model")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    instance, resources, landing = prepared_batches(root, ["s1", "s2"], first_seed=10, n_images=16)
    result = dg.materialize(MODELS + BATCH_ASSETS, selection=MODELS, instance=instance, resources=resources,
                            run_config={"ops": {k: TINY["ops"][k] for k in ("scratch_cnn_model",
                                                                            "fine_tuned_vgg16_model",
                                                                            "elastic_net_model",
                                                                            "anomaly_model")}})
    return root, instance, resources, landing, result


@pytest.mark.slow
def test_every_family_is_trained_registered_and_beats_chance(built):
    root, _, _, _, result = built
    assert result.success
    registry = ModelRegistry(LocalObjectStore(root / "data" / "artifacts"))
    cards = {c.family: c for c in registry.versions()}
    registered = {f.name for f in families()}
    assert set(cards) == registered == {"scratch_cnn", "fine_tuned_vgg16", "elastic_net", "ensemble",
                                                  "anomaly"}
    for family, card in cards.items():
        assert card.data_version.batches == ["s1", "s2"], family
        assert set(card.data_version.label_versions) == {"s1", "s2"}
        assert card.classes == ["ok", "defect"] and card.training_seconds > 0
        assert card.validation.roc_auc > 0.75, (family, card.validation)  # chance is 0.5
    assert len(cards["elastic_net"].trials) == 2
    ensemble = cards["ensemble"]
    members = ("elastic_net", "fine_tuned_vgg16", "scratch_cnn", "anomaly")  # every family registered before it
    # members: the families whose weight is above 0 (a zero-weight member is not run when served)
    assert set(ensemble.members) <= {cards[f].version for f in members} and ensemble.members
    assert sum(ensemble.weights) == pytest.approx(1.0) and min(ensemble.weights) > 0
    assert len(ensemble.trials) > 1 and sum(t["chosen"] for t in ensemble.trials) == 1
    best_member = max(cards[f].validation.roc_auc for f in members)
    # a single member is on the weight grid; ties (within tie_tolerance) go to the lower log loss
    assert ensemble.validation.roc_auc >= best_member - ensemble.config["tie_tolerance"] - 1e-9
    summary = result.output_for_node("scratch_cnn_model")
    assert summary["version"].iloc[0] == cards["scratch_cnn"].version


@pytest.mark.slow
def test_registered_models_score_their_golden_set_as_at_training(built):
    """Every registered model, loaded back through the inference seam (eager and compiled), gives
    the golden probabilities the trained model recorded in its card: from the stored patches,
    and from windows cut out of the stored full-size source photos."""
    root, _, _, _, _ = built
    store = LocalObjectStore(root / "data" / "artifacts")
    registry = ModelRegistry(store)
    patch_sets = {b: read_value(store, f"labeled_patches/{b}") for b in ("s1", "s2")}
    n_val = sum(int((ps.table["split"] == "validation").sum()) for ps in patch_sets.values())
    for card in registry.versions():
        golden = golden_set(card, patch_sets, store)
        assert len(golden) == len(card.golden.patch_ids) == min(32, n_val), card.family
        assert set(golden.kinds) <= {"point", "negative"} and "point" in golden.kinds
        for compiled in (False, True):
            scorer = load_registered(registry, card.version, compiled=compiled)
            np.testing.assert_allclose(scorer.predict_proba(golden.patches), golden.expected, atol=1e-4)
            np.testing.assert_allclose(golden.score(scorer), golden.expected, atol=1e-4)
        assert not np.allclose(golden.expected[:, 1], golden.expected[0, 1])  # a real model, not a constant


@pytest.mark.slow
def test_features_of_an_unchanged_batch_are_not_recomputed(built):
    root, instance, resources, landing, _ = built
    store = LocalObjectStore(root / "data" / "artifacts")
    before = {b: current_version(store, f"backbone_features/{b}")["version"] for b in ("s1", "s2")}
    write_synthetic_surfaces(root / "s3", n_images=6, seed=99, width=256, height=192)
    upload_folder(root / "s3", landing, "s3")
    instance.add_dynamic_partitions(BATCHES, ["s3"])
    cfg = {"ops": {k: v for k, v in TINY["ops"].items() if k in ("labeled_patches", "backbone_features")}}
    job = dg.materialize(BATCH_ASSETS, partition_key="s3", instance=instance, resources=resources, run_config=cfg)
    assert job.success
    retrain = dg.materialize([elastic_net_model, *BATCH_ASSETS], selection=[elastic_net_model],
                             instance=instance, resources=resources)
    assert retrain.success
    after = {b: current_version(store, f"backbone_features/{b}")["version"] for b in ("s1", "s2")}
    assert after == before  # the stored features of s1 and s2 are the very same files
    events = instance.fetch_materializations(dg.AssetKey("backbone_features"), limit=100).records
    per_partition = {}
    for r in events:
        per_partition[r.partition_key] = per_partition.get(r.partition_key, 0) + 1
    assert per_partition == {"s1": 1, "s2": 1, "s3": 1}
    cards = ModelRegistry(store).versions("elastic_net")
    assert cards[-1].data_version.batches == ["s1", "s2", "s3"]


@pytest.mark.slow
def test_multiclass_task_keeps_every_label_and_evaluates_per_class(built):
    from defect_assets.defs.evaluation.assets import build_evaluation_asset
    from defect_assets.pipeline.family_registry import family

    root, instance, resources, _, _ = built
    en_eval = build_evaluation_asset(family("elastic_net"))
    result = dg.materialize([elastic_net_model, en_eval, *BATCH_ASSETS], selection=[elastic_net_model, en_eval],
                            instance=instance, resources=resources,
                            run_config={"ops": {"elastic_net_model": {"config": {"task": "multiclass",
                                                                                 "search_C": []}}}})
    assert result.success
    card = ModelRegistry(LocalObjectStore(root / "data" / "artifacts")).latest("elastic_net")
    assert card.task == "multiclass" and card.classes == ["background", "dent", "scratch"]
    assert card.validation.roc_auc > 0.6
    row = result.output_for_node("elastic_net_evaluation").iloc[0]
    assert row["task"] == "multiclass" and row["threshold_method"] == "argmax"

    # the anomaly family scores defect vs good only: an ensemble of multiclass members leaves it out, and says so
    import pandas as pd

    from defect_assets.pipeline.families import train_ensemble
    from defect_assets.pipeline.family_settings import EnsembleConfig

    store = LocalObjectStore(root / "data" / "artifacts")
    registry = ModelRegistry(store)
    anomaly = registry.latest("anomaly")
    assert anomaly.task == "binary"
    inputs = {"elastic_net_model": pd.DataFrame({"version": [card.version]}),
              "anomaly_model": pd.DataFrame({"version": [anomaly.version]}),
              "labeled_patches": {b: read_value(store, f"labeled_patches/{b}") for b in ("s1", "s2")}}
    lines = []
    ensemble = train_ensemble(EnsembleConfig(), inputs, registry, lines.append).card
    assert ensemble.members == [card.version] and ensemble.task == "multiclass"
    assert any("left out" in line and anomaly.version in line for line in lines), lines
