"""What a person reads in the Dagster UI's metadata: floats to 4 significant digits (0.7743, not
0.7742663656884876), counts and text as they are, while the stored values keep full precision."""

import math

import dagster as dg
import numpy as np
import pandas as pd

from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.metadata import md_table, readable, significant
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import labeled_patches
from defect_assets.defs.resources import default_resources
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import upload_folder
from defect_assets.storage.formats import read_value
from defect_assets_tests.conftest import png_bytes, smooth_image


def test_floats_are_shown_to_four_significant_digits():
    assert significant(0.7742663656884876) == 0.7743
    assert significant(-0.98765) == -0.9877
    assert significant(12345.678) == 12350.0
    assert significant(0.000123456) == 0.0001235
    assert significant(0.5) == 0.5 and significant(0.0) == 0.0
    assert math.isnan(significant(float("nan"))) and significant(float("inf")) == float("inf")


def test_readable_rounds_every_float_and_leaves_counts_and_text_alone():
    shown = readable({"auc": 0.7742663656884876, "np": np.float32(0.123456789), "count": 1234567,
                      "flag": True, "text": "0.7742663656884876", "wrapped": dg.MetadataValue.float(2 / 3),
                      "nested": {"recall": 1 / 3, "rows": [1 / 7, 3]}, "url": dg.MetadataValue.url("http://x")})
    assert shown["auc"] == 0.7743 and type(shown["np"]) is float and shown["np"] == 0.1235
    assert shown["count"] == 1234567 and shown["flag"] is True and shown["text"] == "0.7742663656884876"
    assert shown["wrapped"] == dg.MetadataValue.float(0.6667)
    assert shown["nested"] == {"recall": 0.3333, "rows": [0.1429, 3]}
    assert shown["url"] == dg.MetadataValue.url("http://x")


def test_markdown_tables_show_four_significant_digits():
    df = pd.DataFrame({"family": ["a", "b"], "roc_auc": [0.7742663656884876, 0.91], "images": [10, 2000],
                       "mixed": [1 / 3, None]})
    text = md_table(df).value
    assert "0.7743" in text and "0.774266" not in text and "0.3333" in text and "0.91 " in text
    assert "2000" in text and df["roc_auc"].iloc[0] == 0.7742663656884876  # the caller's frame untouched


def test_a_materialized_asset_shows_its_fraction_rounded_and_stores_it_whole(tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    for i in range(11):
        (folder / f"img{i}.png").write_bytes(png_bytes(smooth_image(72, 72, seed=i)))
    # 7 of 11 images defective: a fraction with no short decimal form
    (folder / "labels.csv").write_text("image,label\n" + "".join(f"img{i}.png,{'crack' if i < 7 else 'ok'}\n"
                                                                 for i in range(11)))
    upload_folder(folder, LocalObjectStore(tmp_path / "data" / "landing"), "b1")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["b1"])
    result = dg.materialize([raw_images, image_labels, labeled_patches], partition_key="b1", instance=instance,
                            resources=default_resources(tmp_path / "data"))
    assert result.success
    [mat] = result.asset_materializations_for_node("labeled_patches")
    assert mat.metadata["defect_fraction"] == dg.MetadataValue.float(0.6364)
    assert mat.metadata["patches"].value == 11
    stored = read_value(LocalObjectStore(tmp_path / "data" / "artifacts"), "labeled_patches/b1").table
    assert stored["is_defect"].mean() == 7 / 11
