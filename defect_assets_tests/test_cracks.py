"""The native-resolution capability, proved small and fast: SYNTHETIC cells with 1-2 px cracks
at 300 px (and soft streaks that look like a shrunk crack in every cell) run through the real
assets twice. Shrunk to 64 px, as the main job did before image_size existed, the elastic net
cannot tell cracked from sound cells (test ROC AUC below 0.7); at the native 300 px it can
(above 0.9). Same images, same split, same model family: only the resolution differs."""

import dagster as dg
import pytest

from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.models.assets import FeatureConfig, backbone_features, models_by_family
from defect_assets.defs.models.families import ElasticNetConfig
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import PatchConfig, labeled_patches
from defect_assets.defs.resources import default_resources
from defect_assets.ml.synthetic_cracks import write_crack_cells
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder

ASSETS = [raw_images, image_labels, labeled_patches, backbone_features]


def evaluate_at(root, folder, patches: PatchConfig, features: FeatureConfig):
    """Build the batch with these settings, train the elastic net, evaluate it on the test split."""
    from defect_assets_tests.test_deploy import all_assets

    instance = dg.DagsterInstance.ephemeral()
    resources = default_resources(root)
    upload_folder(folder, LocalObjectStore(root / "landing"), "cells")
    instance.add_dynamic_partitions(BATCHES, ["cells"])
    config = dg.RunConfig(ops={"labeled_patches": patches, "backbone_features": features})
    assert dg.materialize(ASSETS, partition_key="cells", instance=instance, resources=resources,
                          run_config=config).success
    model = models_by_family["elastic_net"]
    result = dg.materialize(all_assets(), selection=[model.key.to_user_string(), "elastic_net_evaluation"],
                            instance=instance, resources=resources,
                            run_config=dg.RunConfig(ops={"elastic_net_model": ElasticNetConfig(search_C=[0.02, 0.2])}))
    assert result.success
    return result.output_for_node("elastic_net_evaluation").iloc[0]


@pytest.mark.slow
def test_thin_cracks_need_the_native_resolution(tmp_path):
    folder = tmp_path / "cells"
    write_crack_cells(folder, n_cells=240, seed=7)
    shrunk = evaluate_at(tmp_path / "shrunk", folder, PatchConfig(), FeatureConfig())  # 64 px, blocks 3+4
    native = evaluate_at(tmp_path / "native", folder, PatchConfig(image_size=300), FeatureConfig(blocks=[1]))
    assert shrunk["test_patches"] == native["test_patches"] >= 30  # the same test cells
    assert shrunk["test_defects"] == native["test_defects"]
    assert shrunk["roc_auc"] < 0.7, shrunk.to_dict()
    assert native["roc_auc"] > 0.9, native.to_dict()
