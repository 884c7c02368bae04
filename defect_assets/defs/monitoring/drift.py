"""batch_drift: input drift of each new batch on backbone features (pipeline/shift.py), with the
warning check that holds a differing batch back from automatic retraining (retrain_sensor)."""

import dagster as dg
import numpy as np

from defect_assets.defs.metadata import md_image, readable
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.visual import contact_sheet
from defect_assets.pipeline.patching import patches_of
from defect_assets.pipeline.shift import batch_drift as drift_of
from defect_assets.storage.formats import ArrayTable, current_version, read_value

BATCH_LIKE_TRAINING = "batch_like_training"


@dg.asset(partitions_def=batch_partitions, group_name="monitoring", kinds={"sklearn"},
          check_specs=[dg.AssetCheckSpec(BATCH_LIKE_TRAINING, asset="batch_drift",
                                         description="The batch's images cannot be told from the training images "
                                                     "(domain classifier AUC below the level, permutation test)")])
def batch_drift(context: dg.AssetExecutionContext, backbone_features: ArrayTable, labeled_patches: ArrayTable,
                artifact_store: StorageResource):
    """Can a logistic regression tell this batch's backbone features from the training images of
    the other batches? Its cross-validated AUC, a permutation p-value and the images least like
    training. A batch that differs is held back from automatic retraining until some of its
    images are labeled."""
    batch = context.partition_key
    store = artifact_store.open()
    root = "/".join(dg.AssetKey("backbone_features").path)
    refs = [read_value(store, f"{root}/{b}") for b in store.walk_prefixes(root + "/")
            if b != batch and current_version(store, f"{root}/{b}") is not None]
    value = drift_of(backbone_features, refs)
    doc = value.doc
    meta = {k: doc[k] for k in ("differs", "domain_auc", "p_value", "reference_n", "current_n", "auc_level", "reason")
            if k in doc}
    if doc.get("least_like_index"):
        pixels = np.asarray(patches_of(labeled_patches))[np.asarray(doc["least_like_index"])]
        meta["least_like_training"] = md_image(contact_sheet(pixels, columns=6), "the images least like training")
    yield dg.Output(value, metadata=readable(meta))
    yield dg.AssetCheckResult(check_name=BATCH_LIKE_TRAINING, passed=not doc["differs"],
                              severity=dg.AssetCheckSeverity.WARN, metadata=readable({"domain_auc": doc["domain_auc"]}),
                              description=doc["reason"])
