"""The native-resolution capability, proved small and fast: SYNTHETIC cells with 1-2 px cracks
at 300 px (and soft streaks that look like a shrunk crack in every cell) run through the real
assets twice, with the default backbone (ImageNet EfficientNet-Lite0). Shrunk to 64 px, as the
main job did before image_size existed, the elastic net cannot tell cracked from sound cells
(test ROC AUC below 0.7); at the native 300 px it can (above 0.9). Same images, same split, same
model family: only the resolution differs. And at 300 px the heatmap points at the crack."""

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.models.assets import FeatureConfig, backbone_features, build_model_asset
from defect_assets.defs.models.families import ElasticNetConfig
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import PatchConfig, labeled_patches
from defect_assets.defs.resources import default_resources
from defect_assets.ml.synthetic_cracks import write_crack_cells
from defect_assets.pipeline.family_registry import family
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder

ASSETS = [raw_images, image_labels, labeled_patches, backbone_features]


SEED = 7


def evaluate_at(root, folder, patches: PatchConfig, features: FeatureConfig):
    """Build the batch with these settings, train the elastic net, evaluate it on the test split."""
    from defect_assets_tests.helpers.deploy import all_assets

    instance = dg.DagsterInstance.ephemeral()
    resources = default_resources(root)
    upload_folder(folder, LocalObjectStore(root / "landing"), "cells")
    instance.add_dynamic_partitions(BATCHES, ["cells"])
    config = dg.RunConfig(ops={"labeled_patches": patches, "backbone_features": features})
    assert dg.materialize(ASSETS, partition_key="cells", instance=instance, resources=resources,
                          run_config=config).success
    model = build_model_asset(family("elastic_net"))
    result = dg.materialize(all_assets(), selection=[model.key.to_user_string(), "elastic_net_evaluation"],
                            instance=instance, resources=resources,
                            run_config=dg.RunConfig(ops={"elastic_net_model": ElasticNetConfig(search_C=[0.02, 0.2])}))
    assert result.success
    return result.output_for_node("elastic_net_evaluation").iloc[0]


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crack-cells") / "cells"
    write_crack_cells(folder, n_cells=240, seed=SEED)
    return folder


@pytest.fixture(scope="module")
def native(tmp_path_factory, cells):
    root = tmp_path_factory.mktemp("native")
    return root, evaluate_at(root, cells, PatchConfig(image_size=300), FeatureConfig())


@pytest.mark.slow
def test_thin_cracks_need_the_native_resolution(tmp_path, cells, native):
    shrunk = evaluate_at(tmp_path / "shrunk", cells, PatchConfig(), FeatureConfig())  # 64 px, same backbone
    native = native[1]
    assert shrunk["test_patches"] == native["test_patches"] >= 30  # the same test cells
    assert shrunk["test_defects"] == native["test_defects"]
    assert shrunk["roc_auc"] < 0.7, shrunk.to_dict()
    assert native["roc_auc"] > 0.9, native.to_dict()


@pytest.mark.slow
def test_the_heatmap_points_at_the_crack(native, cells):
    """For the cracked test cells the native model calls defective, the heatmap's hottest pixel
    lies within 8 px of a drawn crack pixel in at least 80% of them."""
    from scipy.ndimage import distance_transform_edt

    from defect_assets.ml.scorer import load_registered
    from defect_assets.ml.synthetic_cracks import crack_mask
    from defect_assets.storage.formats import current_version, read_table
    from defect_assets.storage.registry import ModelRegistry

    root, row = native
    store = LocalObjectStore(root / "artifacts")
    scorer = load_registered(ModelRegistry(store), row["model_version"])
    meta = current_version(store, "labeled_patches/cells")
    table = read_table(store, meta["files"]["table"])
    test = table[(table["split"] == "test") & table["is_defect"]]
    folder_index = {f"cell{i:04d}.png": i for i in range(240)}
    hits, called = [], 0
    for _, r in test.iterrows():
        i = folder_index[r["image"].split("/")[-1]]
        cell = np.asarray(Image.open(cells / f"cell{i:04d}.png"))
        score, heat = scorer.explain(cell)
        if score < row["threshold"]:
            continue
        called += 1
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        distance = distance_transform_edt(~crack_mask(SEED, i))[y, x]
        hits.append(distance <= 8)
    assert called >= 10, f"only {called} cracked test cells called defective"
    assert np.mean(hits) >= 0.8, f"{sum(hits)}/{len(hits)} heatmap maxima within 8 px of the crack"
