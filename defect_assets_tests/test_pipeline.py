"""The Dagster asset chain on small generated batches with real storage in a temp folder."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import NO_SPLIT_LEAK
from defect_assets.defs.resources import default_resources
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.helpers.pipeline import (
    check_results,
    materialized,
    run,
    whole_chain_on_a_generated_point_batch,
)


@pytest.fixture
def env(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = default_resources(tmp_path / "data")
    return (instance, resources, LocalObjectStore(tmp_path / "data" / "landing"),
            LocalObjectStore(tmp_path / "data" / "artifacts"))


def test_whole_chain_on_a_generated_point_batch(env, surface_folder):
    whole_chain_on_a_generated_point_batch(env, surface_folder)


def test_split_is_stable_when_a_batch_is_added(env, tmp_path):
    _, _, landing, artifacts = env
    imgs = {f"img{i}.png": png_bytes(smooth_image(80, 80, seed=i)) for i in range(30)}
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i, (name, data) in enumerate(imgs.items()):
        (a if i < 20 else b).joinpath(name).write_bytes(data)
    (b / "img0.png").write_bytes(imgs["img0.png"])  # the same image arrives again in batch b
    (a / "labels.csv").write_text("image,label\n"
                                  + "".join(f"img{i}.png,{'crack' if i % 3 else 'ok'}\n" for i in range(20)))
    (b / "labels.csv").write_text("image,label\nimg0.png,ok\n" + "".join(f"img{i}.png,crack\n" for i in range(20, 30)))
    upload_folder(a, landing, "a")
    assert run(env, "a").success
    before = read_value(artifacts, "labeled_patches/a").table
    upload_folder(b, landing, "b")
    result = run(env, "b")
    assert result.success and check_results(result)[NO_SPLIT_LEAK].passed
    after_a = read_value(artifacts, "labeled_patches/a").table
    pd.testing.assert_frame_equal(before, after_a)
    tb = read_value(artifacts, "labeled_patches/b").table
    both = before.merge(tb, on="image_id", suffixes=("_a", "_b"))
    assert len(both) == 1 and both["split_a"].iloc[0] == both["split_b"].iloc[0]


def test_changed_split_settings_are_caught_by_the_blocking_leak_check(env, tmp_path):
    _, _, landing, artifacts = env
    folder = tmp_path / "c"
    folder.mkdir()
    for i in range(12):
        folder.joinpath(f"i{i}.png").write_bytes(png_bytes(smooth_image(70, 70, seed=100 + i)))
    (folder / "labels.csv").write_text("image,label\n" + "".join(f"i{i}.png,{i % 2}\n" for i in range(12)))
    upload_folder(folder, landing, "c1")
    upload_folder(folder, landing, "c2")  # the same images again...
    assert run(env, "c1").success
    cfg = {"ops": {"labeled_patches": {"config": {"split_salt": "another-salt"}}}}
    result = run(env, "c2", cfg)  # ...dealt with another salt: images change split
    check = check_results(result)[NO_SPLIT_LEAK]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    assert "augmented_training_set" not in materialized(result)  # blocked downstream
    assert "labeled_patches" in materialized(result)


def test_bad_label_row_fails_the_batch_with_file_row_and_reason(env, surface_folder):
    _, _, landing, _ = env
    text = (surface_folder / "points.csv").read_text().splitlines()
    text.insert(2, "synthetic_surface_0000.png,12,not-a-number,dent")
    (surface_folder / "points.csv").write_text("\n".join(text) + "\n")
    upload_folder(surface_folder, landing, "bad")
    result = run(env, "bad")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "image_labels"
    msg = (failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause
           else failure.step_failure_data.error.message)
    assert "points.csv:3: y 'not-a-number' is not a number" in msg
    assert materialized(result) == {"raw_images"}


def test_class_folders_batch(env, tmp_path):
    _, _, landing, artifacts = env
    root = tmp_path / "digits"
    for cls, seeds in (("ok", range(4)), ("crack", range(4, 7))):
        (root / cls).mkdir(parents=True)
        for s in seeds:
            (root / cls / f"{s}.png").write_bytes(png_bytes(np.stack([smooth_image(50, 60, s)] * 3, axis=2)))
    upload_folder(root, landing, "digits")
    assert run(env, "digits", {"ops": {"labeled_patches": {"config": {"size": 32, "color": "RGB"}}}}).success
    ps = read_value(artifacts, "labeled_patches/digits")
    assert sorted(ps.table["label"].value_counts().items()) == [("crack", 3), ("ok", 4)]
    assert ps.table["is_defect"].sum() == 3
    assert ps.arrays["context"].shape == (7, 48, 48, 3)


def test_definitions_load():
    from defect_assets.definitions import build_defs

    defs = build_defs()

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_images", "image_labels", "labeled_patches", "augmented_training_set", "backbone_features",
            "scratch_cnn_model", "fine_tuned_vgg16_model", "elastic_net_model", "champion_model",
            "evaluation_history"} <= keys
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name and node.description and node.kinds, key
    lineage = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
               for k in graph.get_all_asset_keys()}
    assert lineage["augmented_training_set"] == {"labeled_patches"}
    assert lineage["labeled_patches"] == {"raw_images", "image_labels"}
    assert lineage["elastic_net_model"] == {"backbone_features"}
    for job in ("prepare_batch_job", "train_models_job", "evaluate_job", "retrain_job"):
        assert defs.resolve_job_def(job) is not None
    assert defs.resolve_job_def("prepare_batch_job").partitions_def.name == BATCHES
    assert {s.name for s in defs.sensors} >= {"landing_zone_sensor", "retrain_sensor"}
    assert {s.name for s in defs.schedules} == {"nightly_retrain_schedule", "daily_monitoring_schedule"}
    assert lineage["prediction_monitoring"] == {"champion_test_predictions"}
    assert lineage["champion_test_predictions"] == {"champion_model", "labeled_patches"}
    assert defs.resolve_job_def("monitoring_job").partitions_def.get_partition_keys()[0] == "2026-11-01"


def test_a_group_column_keeps_every_image_of_a_part_in_one_split(env, tmp_path):
    from defect_assets.ml.splits import assign_split

    folder = tmp_path / "parts"
    folder.mkdir()
    rows = []
    for part in range(8):
        for view in range(4):  # four photos of each part, all different pictures
            name = f"part{part}-view{view}.png"
            (folder / name).write_bytes(png_bytes(smooth_image(40, 48, seed=100 + part * 10 + view)))
            rows.append({"image": name, "label": "scratch" if part % 2 else "ok", "group": f"part-{part}"})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    _, _, landing, artifacts = env
    upload_folder(folder, landing, "parts")
    result = run(env, "parts")
    assert result.success and check_results(result)[NO_SPLIT_LEAK].passed

    table = read_value(artifacts, "labeled_patches/parts").table
    assert len(table) == 32 and table["group"].nunique() == 8
    per_group = table.groupby("group")["split"].unique()
    assert {g: list(s) for g, s in per_group.items()} == {f"part-{p}": [assign_split(f"group:part-{p}")]
                                                          for p in range(8)}
    # dealt image by image instead, some part would have straddled two splits
    by_image = table.assign(alone=[assign_split(sha) for sha in table["image_id"]]).groupby("group")["alone"]
    assert (by_image.nunique() > 1).any()

    rows[0]["group"] = "part-7"  # the same photo named in two groups (listed twice) is refused
    pd.DataFrame([*rows, {**rows[0], "group": "part-0"}]).to_csv(folder / "labels.csv", index=False)
    upload_folder(folder, landing, "parts-bad")
    bad = run(env, "parts-bad")
    assert not bad.success
    failure = next(e for e in bad.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.error)
    assert "part0-view0.png" in text and "in group 'part-7' earlier and group 'part-0' here" in text


@pytest.mark.parametrize("job, op, field, typo, good", [
    ("train_models_job", "elastic_net_model", "task", "binay", "multiclass"),
    ("train_models_job", "scratch_cnn_model", "architecture", "lenett", "lenet"),
    ("evaluate_job", "elastic_net_evaluation", "threshold_method", "max-f1", "cost"),
])
def test_a_typo_in_a_choice_is_refused_at_launch_with_the_choices(job, op, field, typo, good):
    from defect_assets.definitions import build_defs

    defs = build_defs()

    job_def = defs.resolve_job_def(job)
    with pytest.raises(dg.DagsterInvalidConfigError, match=f"{field}.*not in enum type.*got {typo}"):
        dg.validate_run_config(job_def, {"ops": {op: {"config": {field: typo}}}})
    checked = dg.validate_run_config(job_def, {"ops": {op: {"config": {field: good}}}})
    assert checked["ops"][op]["config"][field] == good
