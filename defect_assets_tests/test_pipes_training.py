"""Training through Dagster Pipes: ``scratch_cnn_model`` with ``through_pipes: true`` trains a
tiny CNN in another process (``python -m defect_assets.pipes_training`` under
``dg.PipesSubprocessClient``), whose log lines and per-epoch metrics reach the run, and whose
registered model becomes the asset's value, as in-process training would."""

import os

import dagster as dg
import pytest

from defect_assets.defs.models.assets import models_by_family
from defect_assets.defs.partitions import BATCHES, batch_partitions
from defect_assets.defs.resources import default_resources
from defect_assets.pipeline.patching import build_augmented_set
from defect_assets.pipeline.tiny import synthetic_patch_set
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.formats import read_value, write_value
from defect_assets.storage.layout import asset_value_prefix
from defect_assets.storage.registry import ModelRegistry

EPOCHS = 2
scratch_cnn_model = models_by_family["scratch_cnn"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scratch_cnn_trains_in_a_pipes_subprocess_and_reports_epochs_and_version(tmp_path):
    store = LocalObjectStore(tmp_path / "data" / "artifacts")
    patch_set = synthetic_patch_set(n_scenes=14, size=32, seed=5)
    write_value(store, asset_value_prefix(["labeled_patches"], "p1"), patch_set)
    write_value(store, asset_value_prefix(["augmented_training_set"], "p1"), build_augmented_set(patch_set))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["p1"])
    config = {"filters": [4, 8], "epochs": EPOCHS, "images_per_epoch": 256, "batch_size": 32,
              "train_angle_step": 90, "through_pipes": True}
    # the batch's patch sets were stored above as the IO manager stores them: here they are sources
    upstream = [dg.AssetSpec(name, partitions_def=batch_partitions) for name in ("labeled_patches",
                                                                                 "augmented_training_set")]
    result = dg.materialize([*upstream, scratch_cnn_model], instance=instance,
                            resources=default_resources(tmp_path / "data"),
                            run_config={"ops": {"scratch_cnn_model": {"config": config}}})
    assert result.success
    (mat,) = result.asset_materializations_for_node("scratch_cnn_model")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    cards = ModelRegistry(store).versions()
    assert [c["version"] for c in cards] == [meta["version"]]  # the one model the subprocess registered
    card = cards[0]
    assert card["family"] == "scratch_cnn" and card["data_version"]["batches"] == ["p1"]
    assert "through_pipes" not in card["config"] and card["config"]["epochs"] == EPOCHS
    assert meta["trained_in_process"] != os.getpid()
    assert meta["epochs"] == meta["epochs_reported"] == EPOCHS  # one custom message per epoch
    assert meta["val_roc_auc"] == pytest.approx(card["validation"]["roc_auc"])
    value = read_value(store, asset_value_prefix(["scratch_cnn_model"], None))
    assert value["version"].tolist() == [meta["version"]]
    logged = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any(f"scratch_cnn epoch {EPOCHS}/{EPOCHS}" in m for m in logged), logged[-20:]


def test_the_external_entry_point_knows_every_family_by_the_same_function():
    from defect_assets.defs.models.families import MODEL_FAMILIES
    from defect_assets.pipeline.families import TRAINERS

    assert TRAINERS == {f.name: f.train for f in MODEL_FAMILIES}
