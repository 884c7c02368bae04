"""champion_test_predictions: the approved champion on every test patch, its most confident
misses and false alarms as pictures with heatmaps (for the dashboard), and the drift reference
for prediction monitoring. The logic is in ``pipeline/mistakes.py``."""

import dagster as dg
import pandas as pd

from defect_assets.defs.metadata import md_image, md_table, readable
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.visual import contact_sheet
from defect_assets.pipeline import mistakes
from defect_assets.pipeline.champion import Champion
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.layout import champion_predictions_key, examples_key
from defect_assets.storage.registry import ModelRegistry


class MistakesConfig(dg.Config):
    per_kind: int = 6
    """How many misses and how many false alarms to picture (each heatmap costs about 50 scored
    patches: 7 x 7 occluded copies)."""


@dg.asset(group_name="evaluation", kinds={"parquet", "csv"},
          ins={"champion": dg.AssetIn("champion_model"), "labeled_patches": dg.AssetIn("labeled_patches")})
def champion_test_predictions(context: dg.AssetExecutionContext, config: MistakesConfig, champion: Champion,
                              labeled_patches: dict[str, ArrayTable],
                              artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
    """The champion's score and decision on every test patch (through the inference seam, as
    evaluated), its most confident misses and false alarms with an occlusion heatmap each, and
    its place in champions.json. Runs only after the champion's blocking checks passed. The
    dashboard shows the pictures; prediction monitoring compares live scores with these."""
    store = artifact_store.open()
    result = mistakes.champion_test_predictions(champion, ModelRegistry(store), labeled_patches, store,
                                                config.per_kind)
    table, doc = result.table, result.examples
    context.log.info(f"{result.version} on {len(table)} test patches: {doc['counts']['misses']} misses, "
                     f"{doc['counts']['false_alarms']} false alarms")
    shown = ["patch_id", "image", "batch", "label", "defect_score", "decision"]
    meta = {"model_version": result.version, "test_patches": len(table),
            "accuracy": float(table["correct"].mean()),
            "majority_baseline": float(max(table["is_defect"].mean(), 1 - table["is_defect"].mean())),
            "misses": doc["counts"]["misses"], "false_alarms": doc["counts"]["false_alarms"],
            "table": dg.MetadataValue.path(f"{store.url}/{champion_predictions_key(result.version)}"),
            "examples": dg.MetadataValue.path(f"{store.url}/{examples_key(result.version)}")}
    for kind, title in (("misses", "most confident misses"), ("false_alarms", "most confident false alarms")):
        meta[f"{kind}_table"] = md_table(pd.DataFrame(doc[kind], columns=shown))
        if len(result.sheets[kind]):
            meta[f"plot_{kind}"] = md_image(contact_sheet(result.sheets[kind], columns=2),
                                            f"{title} (patch | heatmap)")
    return dg.Output(table, metadata=readable(meta))
