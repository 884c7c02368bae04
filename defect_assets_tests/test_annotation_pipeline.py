"""Marks drawn on the photo through the asset graph (real runs on an ephemeral instance with
local stores): new_labels_sensor asks for a rebuild of the batch that got marks, image_labels
turns them into point rows and a "no defect here" row (a new label version), and
labeled_patches cuts windows centered on the points and negative windows from the clean photo."""

import dagster as dg

from defect_assets.defs.active_learning.sensors import new_labels_sensor
from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import labeled_patches
from defect_assets.defs.resources import default_resources
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.annotations import Annotation, MarkLog
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value

ASSETS = [raw_images, image_labels, labeled_patches]


def test_marks_rebuild_the_batch_into_point_rows_and_centered_patches(tmp_path):
    from defect_assets.ml.synthetic import write_synthetic_surfaces

    data = tmp_path / "data"
    folder = tmp_path / "dents-2"
    write_synthetic_surfaces(folder, n_images=3, seed=5, width=192, height=160, defects_per_image=(1, 2))
    (folder / "points.csv").unlink()  # photos only: the marks come from the annotation view
    upload_folder(folder, LocalObjectStore(data / "landing"), "dents-2")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["dents-2"])
    resources = default_resources(data)
    assert dg.materialize(ASSETS, partition_key="dents-2", instance=instance, resources=resources).success
    store = resources["artifact_store"].open()
    images = read_value(store, "raw_images/dents-2").table
    images = images[images["role"] == "image"].sort_values("path")
    first, second = images.iloc[0], images.iloc[1]

    def tick():
        ctx = dg.build_sensor_context(instance=instance, resources={"artifact_store": resources["artifact_store"]})
        return new_labels_sensor(ctx).run_requests or []

    assert tick() == []
    log = MarkLog(store)
    points = ({"kind": "point", "label": "dent", "x": 50.5, "y": 60.0},
              {"kind": "point", "label": "scratch", "x": 140.0, "y": 100.25})
    log.append(Annotation(batch="dents-2", image=first.path, image_id=first.sha256, labeler="ana", marks=points))
    log.append(Annotation(batch="dents-2", image=second.path, image_id=second.sha256, labeler="ana", no_defect=True))
    assert [r.partition_key for r in tick()] == ["dents-2"]

    assert dg.materialize(ASSETS, selection=ASSETS[1:], partition_key="dents-2", instance=instance,
                          resources=resources).success
    labels = read_value(store, "image_labels/dents-2")
    assert sorted(zip(labels["image"], labels["kind"], labels["label"], labels["x"].fillna(-1))) == sorted([
        (first.path, "point", "dent", 50.5), (first.path, "point", "scratch", 140.0),
        (second.path, "none", "no_defect", -1)])
    meta = instance.fetch_materializations(dg.AssetKey("image_labels"), limit=1).records[0].asset_materialization
    assert meta.metadata["page_marks"].value == 3
    patches = read_value(store, "labeled_patches/dents-2").table
    marked = patches[patches["kind"] == "point"]
    assert sorted(zip(marked["x"], marked["y"], marked["is_defect"])) == [(50.5, 60.0, True), (140.0, 100.25, True)]
    clean = patches[patches["image"] == second.path]
    assert len(clean) == 2 and set(clean["kind"]) == {"negative"} and not clean["is_defect"].any()
    assert tick() == []  # built from exactly these marks: nothing more to do
