"""The ingest-to-augmentation asset chain run on a generated point batch (local or Blob storage)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from defect_assets.defs.ingest.assets import RAW_IMAGES_READABLE, image_labels, raw_images
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import NO_SPLIT_LEAK, augmented_training_set, labeled_patches
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value
from defect_assets_tests.conftest import png_bytes, smooth_image

ASSETS = [raw_images, image_labels, labeled_patches, augmented_training_set]


def run(env, batch, run_config=None):
    instance, resources, _, _ = env
    if batch not in instance.get_dynamic_partitions(BATCHES):
        instance.add_dynamic_partitions(BATCHES, [batch])
    return dg.materialize(ASSETS, partition_key=batch, instance=instance, resources=resources,
                          run_config=run_config or {}, raise_on_error=False)


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def whole_chain_on_a_generated_point_batch(env, surface_folder):
    (surface_folder / "broken.png").write_bytes(png_bytes(smooth_image(64, 64))[:200])
    (surface_folder / "notes.docx").write_bytes(b"PK\x03\x04 not an image")
    _, _, landing, artifacts = env
    upload_folder(surface_folder, landing, "b1")
    points = pd.read_csv(surface_folder / "points.csv")

    result = run(env, "b1")
    assert result.success
    assert materialized(result) == {"raw_images", "image_labels", "labeled_patches", "augmented_training_set"}

    inv = read_value(artifacts, "raw_images/b1").table
    assert sorted(inv.loc[inv["role"] == "rejected", "path"]) == ["SYNTHETIC.txt", "broken.png", "notes.docx"]
    assert (inv["role"] == "image").sum() == 6 and (inv["role"] == "label_file").sum() == 1
    reasons = dict(zip(inv["path"], inv["reason"]))
    assert "corrupt or truncated" in reasons["broken.png"] or "not an image" in reasons["broken.png"]
    for key in inv.loc[inv["role"] == "image", "stored_key"]:  # content-addressed copies on disk
        sha = key.split("/")[-1].split(".")[0]
        import hashlib
        assert hashlib.sha256(artifacts.read_bytes(key)).hexdigest() == sha

    checks = check_results(result)
    assert checks[RAW_IMAGES_READABLE].passed is False
    assert checks[RAW_IMAGES_READABLE].severity == dg.AssetCheckSeverity.WARN
    assert checks[NO_SPLIT_LEAK].passed is True

    labels = read_value(artifacts, "image_labels/b1")
    assert len(labels) == len(points) and set(labels["kind"]) == {"point"}

    ps = read_value(artifacts, "labeled_patches/b1")
    t = ps.table
    assert (t["kind"] == "point").sum() == len(points)
    assert (t["kind"] == "negative").sum() == len(points)  # 1 negative per positive, room enough on 320x256
    assert t.groupby("image_id")["split"].nunique().max() == 1
    assert ps.arrays["context"].shape[1:] == (94, 94)

    aug = read_value(artifacts, "augmented_training_set/b1")
    n_train = int((t["split"] == "train").sum())
    assert len(aug) == 48 * n_train and aug.arrays["image"].shape == (48 * n_train, 64, 64)
    assert set(aug.table["patch_id"]) == set(t.loc[t["split"] == "train", "patch_id"])
    assert aug.table.groupby("patch_id").size().eq(48).all()
