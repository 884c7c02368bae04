"""Input drift of one batch (issue 25): its images' backbone features against the training images
of the other batches (``ml.drift.domain_classifier_drift``), and whether it is held back from
automatic retraining and deployment. No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defect_assets.ml.drift import DRIFT_AUC_LEVEL, DRIFT_P_LEVEL, domain_classifier_drift
from defect_assets.storage.formats import ArrayTable

HOLD_ADVICE = ("label some of its images (they go to the labeling queue first); a new label version of the batch "
               "releases it for retraining")


@dataclass
class BatchDrift:
    """The stored document of ``batch_drift`` (JSON through the IO manager)."""
    doc: dict

    def to_dict(self) -> dict:
        return self.doc

    @classmethod
    def from_dict(cls, doc: dict) -> BatchDrift:
        return cls(dict(doc))


def train_features(tables: list[ArrayTable]) -> np.ndarray:
    """The train-split rows of the features of several batches, stacked."""
    parts = [np.asarray(t.arrays["features"])[(t.table["split"] == "train").to_numpy()] for t in tables]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def batch_drift(current: ArrayTable, references: list[ArrayTable], permutations: int = 50,
                auc_level: float = DRIFT_AUC_LEVEL, p_level: float = DRIFT_P_LEVEL) -> BatchDrift:
    """The drift document of a batch: domain AUC, p-value, chance level, whether it ``differs``
    (AUC >= auc_level and p < p_level), the patch ids least like training and what to do."""
    ref = train_features(references)
    cur = np.asarray(current.arrays["features"])
    doc = {"auc_level": auc_level, "p_level": p_level, "current_n": int(len(cur)), "reference_n": int(len(ref))}
    if len(ref) < 2 or len(cur) < 2:
        return BatchDrift({**doc, "differs": False, "domain_auc": float("nan"), "p_value": float("nan"),
                           "reason": "no training images of other batches to compare with",
                           "least_like_training": []})
    d = domain_classifier_drift(ref, cur, permutations=permutations)
    differs = d.differs(auc_level, p_level)
    ids = current.table["patch_id"].astype(str).to_numpy()
    doc.update(d.summary())
    doc.update({"differs": bool(differs), "least_like_training": [str(ids[i]) for i in d.least_like_training],
                "least_like_index": d.least_like_training,
                "reason": (f"domain AUC {d.auc:.3f} >= {auc_level} (p = {d.p_value:.3f}, chance reaches "
                           f"{d.null_auc_95:.3f}): its images differ from training; {HOLD_ADVICE}") if differs else
                f"domain AUC {d.auc:.3f} (p = {d.p_value:.3f}): like training"})
    return BatchDrift(doc)
