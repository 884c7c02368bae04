"""The active-learning assets on real small batches (Dagster runs, a temporary artifact store, a
tiny registered model): the unlabeled pool of a batch without labels and of one labeled in part,
the labeling queue scored through the one inference seam, labels from the page flowing through
image_labels as a new label version, new_labels_sensor asking for exactly the rebuild needed,
and the next queue scored by the newly promoted model."""

import io

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from defect_assets.defs.active_learning.assets import labeling_queue, unlabeled_pool
from defect_assets.defs.active_learning.sensors import LABEL_EVENTS_TAG, new_labels_sensor
from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.jobs import relabel_batch_job, retrain_job
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import labeled_patches
from defect_assets.defs.resources import default_resources
from defect_assets.ml.active_learning import entropy, rank
from defect_assets.ml.scorer import load_registered
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value
from defect_assets.storage.labeling import LabelEvent, LabelLog, current_queue
from defect_assets.storage.layout import ACTIVE_LEARNING_PROGRESS
from defect_assets_tests.helpers.serving import model_registry

PREPARE = [raw_images, image_labels, labeled_patches, unlabeled_pool]
RELABEL = [image_labels, labeled_patches, unlabeled_pool]


@pytest.fixture
def project(tmp_path):
    """Two batches in the landing zone (one without any label file, one with defect points on 4
    of its 6 photos), prepared by real runs, and a tiny model in production."""
    from defect_assets.ml.synthetic import write_synthetic_surfaces

    data = tmp_path / "data"
    store, registry, versions = model_registry(data)
    registry.promote(versions["a"], threshold=0.5)
    landing = LocalObjectStore(data / "landing")
    unlabeled = tmp_path / "line-7"
    write_synthetic_surfaces(unlabeled, n_images=7, seed=11, width=192, height=160, defects_per_image=(0, 2))
    (unlabeled / "points.csv").unlink()  # arrived with no label file
    upload_folder(unlabeled, landing, "line-7")
    partly = tmp_path / "line-8"
    write_synthetic_surfaces(partly, n_images=4, clean_images=2, seed=12, width=192, height=160)
    # points.csv names the 4 photos with defects; the 2 clean ones are in no label file
    upload_folder(partly, landing, "line-8")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["line-7", "line-8"])
    resources = default_resources(data)
    for batch in ("line-7", "line-8"):
        assert dg.materialize(PREPARE, partition_key=batch, instance=instance, resources=resources).success
    return instance, resources, store, registry, versions


def queue_run(instance, resources, **config):
    return dg.materialize([*PREPARE, labeling_queue], instance=instance, resources=resources,
                          selection=[labeling_queue], run_config={"ops": {"labeling_queue": {"config": config}}}
                          if config else None)


def label_items(store, queue, picks: dict[str, str], labeler="ana") -> list[LabelEvent]:
    log = LabelLog(store)
    out = []
    for item_id, label in picks.items():
        row = queue.item(item_id)
        out.append(log.append(LabelEvent(kind="label", queue=queue.id, item=item_id, batch=row["batch"],
                                         image=row["image"], image_id=row["image_id"], labeler=labeler,
                                         model_version=row["model_version"], label=label))[0])
    return out


def sensor_tick(instance, resources, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"artifact_store": resources["artifact_store"]})
    result = new_labels_sensor(ctx)
    return result.run_requests or [], result.cursor


def test_pool_queue_labels_and_the_next_queue(project):
    instance, resources, store, registry, versions = project
    pool7 = read_value(store, "unlabeled_pool/line-7")
    pool8 = read_value(store, "unlabeled_pool/line-8")
    assert len(pool7) == 7  # no label file: every image
    assert sorted(pool8["image"]) == ["synthetic_surface_0004.png", "synthetic_surface_0005.png"]

    # the queue: the pool of both batches scored by production (model a), the 4 most uncertain by entropy
    assert queue_run(instance, resources, per_round=4).success
    queue = current_queue(store)
    items = queue.items
    assert len(items) == 4 and set(items["strategy"]) == {"entropy"} and set(items["model_version"]) == {versions["a"]}
    assert queue.doc["pool_images"] == 9 and queue.doc["heatmaps"] is True  # the tiny model learned from windows
    pool = np.concatenate([pool7["stored_key"], pool8["stored_key"]])
    scorer = load_registered(registry, versions["a"])
    proba = scorer.predict_images([store.read_bytes(k) for k in pool])  # the seam, in this test
    expected = [pool[i] for i in rank(proba, "entropy")[:4]]
    assert items["stored_key"].tolist() == expected
    for row in items.itertuples(index=False):
        want = proba[list(pool).index(row.stored_key)]
        np.testing.assert_allclose(row.probabilities, want, atol=1e-6)
        assert row.guess == scorer.classes[int(np.argmax(want))]
        assert row.entropy == pytest.approx(float(entropy(want[None])[0]))

    # a first tick sees nothing to do; two labels from the page for line-7 then ask for one rebuild of line-7
    requests, cursor = sensor_tick(instance, resources, None)
    assert requests == []
    seven = items[items["batch"] == "line-7"]["item_id"].tolist()[:2]
    assert len(seven) == 2, "the synthetic pool is built so that line-7 has queued items"
    label_items(store, queue, {seven[0]: "defect", seven[1]: "ok"})
    requests, cursor = sensor_tick(instance, resources, cursor)
    assert [(r.partition_key, r.job_name) for r in requests] == [("line-7", None)]
    digest = LabelLog(store).digests()["line-7"]
    assert requests[0].run_key == f"labels:line-7:{digest}" and requests[0].tags[LABEL_EVENTS_TAG] == digest

    before = instance.fetch_materializations(dg.AssetKey("image_labels"), limit=10).records
    old_version = {r.partition_key: r.asset_materialization.metadata["label_version"].value for r in before}
    assert dg.materialize(PREPARE, selection=RELABEL, partition_key="line-7", instance=instance,
                          resources=resources).success
    labels = read_value(store, "image_labels/line-7")
    page = labels[labels["source"] == "labeling page"]
    by_image = dict(zip(page["image"], page["label"]))
    assert by_image == {queue.item(seven[0])["image"]: "defect", queue.item(seven[1])["image"]: "ok"}
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("image_labels"), asset_partitions=["line-7"]), limit=1).records[0]
    meta = latest.asset_materialization.metadata
    assert meta["page_labels"].value == 2 and meta["label_events"].value == digest
    assert meta["label_version"].value != old_version["line-7"]  # a new label version of the batch
    patches = read_value(store, "labeled_patches/line-7")
    assert patches.attrs["label_version"] == meta["label_version"].value  # carried downstream: lineage
    assert sorted(patches.table["image"]) == sorted(by_image) and set(patches.table["kind"]) == {"image"}
    assert len(read_value(store, "unlabeled_pool/line-7")) == 5
    requests, cursor = sensor_tick(instance, resources, cursor)
    assert requests == []  # built from exactly these events: nothing more to do
    requests, _ = sensor_tick(instance, resources, None)
    assert requests == []  # even with a lost cursor (the metadata says what was built)

    # a new champion in production: the next queue is scored by it, and skips what was labeled
    registry.promote(versions["b"], threshold=0.5)
    assert queue_run(instance, resources, per_round=4, strategy="margin").success
    nxt = current_queue(store)
    assert nxt.id != queue.id and nxt.model_version == versions["b"]
    assert set(nxt.items["model_version"]) == {versions["b"]} and set(nxt.items["strategy"]) == {"margin"}
    assert nxt.doc["pool_images"] == 7
    assert not set(nxt.items["image"]) & set(by_image)

    # one progress row per round for the dashboard: who scored it, the pool, the labels stored by then
    progress = pd.read_csv(io.BytesIO(store.read_bytes(ACTIVE_LEARNING_PROGRESS)))
    assert progress[["round", "queue", "model_version", "strategy", "pool_images", "queued", "page_labels"]
                    ].values.tolist() == [[0, queue.id, versions["a"], "entropy", 9, 4, 0],
                                          [1, nxt.id, versions["b"], "margin", 7, 4, 2]]


def test_the_queue_is_rebuilt_by_retraining_after_deployment():
    from defect_assets.definitions import build_defs

    defs = build_defs()

    job = defs.resolve_job_def(retrain_job.name)
    assert "labeling_queue" in job.graph.node_dict
    asset_graph = defs.resolve_asset_graph()
    assert dg.AssetKey("deployed_endpoint") in asset_graph.get(dg.AssetKey("labeling_queue")).parent_keys
    relabel = defs.resolve_job_def(relabel_batch_job.name)
    assert sorted(relabel.graph.node_dict) == ["augmented_training_set", "backbone_features", "image_labels",
                                               "labeled_patches", "unlabeled_pool"]


def test_no_production_model_is_a_clear_failure(tmp_path):
    from defect_assets.ml.synthetic import write_synthetic_surfaces

    data = tmp_path / "data"
    folder = tmp_path / "b"
    write_synthetic_surfaces(folder, n_images=2, seed=1, width=96, height=96, defects_per_image=(0, 1))
    (folder / "points.csv").unlink()
    upload_folder(folder, LocalObjectStore(data / "landing"), "b")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["b"])
    resources = default_resources(data)
    assert dg.materialize(PREPARE, partition_key="b", instance=instance, resources=resources).success
    result = dg.materialize([*PREPARE, labeling_queue], selection=[labeling_queue], instance=instance,
                            resources=resources, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "no production model" in failure.event_specific_data.error.message


def test_the_diversity_step_picks_from_the_most_uncertain_and_spreads_them(project):
    instance, resources, store, registry, versions = project
    assert queue_run(instance, resources, per_round=3, diversity=True, shortlist_factor=2, feature_blocks=[1]).success
    queue = current_queue(store)
    items = queue.items
    assert len(items) == 3 and queue.doc["diversity"] is True and set(items["diversity"]) == {True}
    pool = np.concatenate([read_value(store, f"unlabeled_pool/{b}")["stored_key"] for b in ("line-7", "line-8")])
    proba = load_registered(registry, versions["a"]).predict_images([store.read_bytes(k) for k in pool])
    shortlist = [pool[i] for i in rank(proba, "entropy")[:6]]
    assert items["stored_key"].iloc[0] == shortlist[0]  # the most uncertain first
    assert set(items["stored_key"]) <= set(shortlist) and items["stored_key"].is_unique


def test_the_queue_by_entropy_clusters_asks_the_most_uncertain_image_first_and_never_twice(project):
    """The asset with the strategy the bench measured best (one pick per k-means cluster of the
    backbone features): per_round distinct images, the pool's most uncertain image first (it leads
    its own cluster), the strategy recorded on every item."""
    instance, resources, store, registry, versions = project
    assert queue_run(instance, resources, per_round=3, strategy="entropy+clusters").success
    queue = current_queue(store)
    items = queue.items
    assert len(items) == 3 and queue.doc["strategy"] == "entropy+clusters"
    assert set(items["strategy"]) == {"entropy+clusters"} and items["stored_key"].is_unique
    pool = np.concatenate([read_value(store, f"unlabeled_pool/{b}")["stored_key"] for b in ("line-7", "line-8")])
    proba = load_registered(registry, versions["a"]).predict_images([store.read_bytes(k) for k in pool])
    assert items["stored_key"].iloc[0] == pool[rank(proba, "entropy")[0]]
    assert list(items["entropy"]) == sorted(items["entropy"], reverse=True)
