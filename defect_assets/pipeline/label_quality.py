"""Label quality without Dagster: the likely mislabeled images of every built batch, from
out-of-fold probabilities of the elastic net on the cached backbone features (``ml.label_quality``),
with where each label came from and who gave it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defect_assets.ml.label_quality import label_issues, out_of_fold_proba
from defect_assets.ml.labels import PAGE_SOURCE

ISSUE_COLUMNS = ["rank", "batch", "image", "image_id", "given_label", "suggested_label", "self_confidence",
                 "suggested_probability", "is_issue", "source", "labeler", "stored_key", "width", "height"]


def image_rows(batch: str, features_table: pd.DataFrame, features: np.ndarray, raw: pd.DataFrame,
               labels: pd.DataFrame, page: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per labeled image of a batch (the mean feature of its patches; the image's label is
    its image-level label, else its patches' majority), with the label's source and labeler."""
    t = features_table.reset_index(drop=True)
    if not len(t):
        return pd.DataFrame(columns=["batch", "image", "image_id", "given_label", "source", "labeler"]), \
            np.zeros((0, features.shape[1] if features.ndim == 2 else 0), np.float32)
    images = raw[raw["role"] == "image"].drop_duplicates("sha256").set_index("sha256")
    paths = images["path"].astype(str)
    image_level = labels[labels["kind"] == "image"].drop_duplicates("image", keep="last").set_index("image")
    sources = labels.drop_duplicates("image", keep="last").set_index("image")["source"].astype(str)
    labelers = (page.drop_duplicates("image", keep="last").set_index("image")["labeler"].astype(str)
                if len(page) else pd.Series(dtype=str))
    rows, feats = [], []
    for image_id, idx in t.groupby("image_id", sort=True).groups.items():
        image = str(paths.get(image_id, image_id))
        given = (str(image_level.loc[image, "label"]) if image in image_level.index
                 else str(t.loc[idx, "label"].astype(str).mode().iloc[0]))
        found = image_id in images.index
        rows.append({"batch": batch, "image": image, "image_id": str(image_id), "given_label": given,
                     "source": str(sources.get(image, "")), "labeler": str(labelers.get(image, "")),
                     "stored_key": str(images.loc[image_id, "stored_key"]) if found else "",
                     "width": int(images.loc[image_id, "width"]) if found else 0,
                     "height": int(images.loc[image_id, "height"]) if found else 0})
        feats.append(np.asarray(features)[np.asarray(idx)].mean(axis=0))
    return pd.DataFrame(rows), np.asarray(feats, np.float32)


def find_issues(rows: pd.DataFrame, x: np.ndarray, folds: int = 5, C: float = 0.05, l1_ratio: float = 0.5,
                seed: int = 0) -> pd.DataFrame:
    """Every labeled image with its out-of-fold suggestion and self-confidence, most suspect first
    (cleanlab's suspects, then the rest by self-confidence); ``is_issue`` marks cleanlab's."""
    if not len(rows):
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    classes = sorted(rows["given_label"].astype(str).unique())
    if len(classes) < 2:
        raise ValueError(f"label issues need at least two labels among the images, got {classes}")
    y = np.searchsorted(classes, rows["given_label"].astype(str).to_numpy())
    counts = np.bincount(y, minlength=len(classes))
    proba = out_of_fold_proba(x, y, classes, folds=max(2, min(folds, int(counts.min()))), C=C, l1_ratio=l1_ratio,
                              seed=seed)
    found = label_issues(y, proba)
    order = found.ranking()
    out = rows.iloc[order].reset_index(drop=True).assign(
        rank=np.arange(1, len(order) + 1),
        suggested_label=[classes[i] for i in found.suggested[order]],
        self_confidence=found.self_confidence[order],
        suggested_probability=proba[order, found.suggested[order]],
        is_issue=found.is_issue[order])
    return out[ISSUE_COLUMNS]


def gold_candidates(issues: pd.DataFrame, n: int, exclude_source: str = PAGE_SOURCE) -> pd.DataFrame:
    """Gold items for the labeling queues: images whose label came from a label file (not the page
    being measured), that are no suspect and whose out-of-fold model agrees, most confident
    first, balanced over labels (round robin); ``storage.labeling.GOLD_COLUMNS``."""
    ok = issues[~issues["is_issue"] & (issues["source"] != exclude_source) & (issues["stored_key"] != "")
                & (issues["suggested_label"] == issues["given_label"])]
    ok = ok.sort_values("self_confidence", ascending=False, kind="stable")
    groups = [g.to_dict("records") for _, g in ok.groupby("given_label", sort=True)]
    picked: list[dict] = []
    while len(picked) < n and any(groups):
        for g in groups:
            if g and len(picked) < n:
                picked.append(g.pop(0))
    out = pd.DataFrame(picked, columns=list(issues.columns))
    return out.rename(columns={"given_label": "label"})[["batch", "image", "image_id", "stored_key", "width",
                                                          "height", "label"]].reset_index(drop=True)


def issue_counts(issues: pd.DataFrame) -> pd.DataFrame:
    """Images and suspects per batch and label source."""
    if not len(issues):
        return pd.DataFrame(columns=["batch", "source", "images", "issues", "issue_rate"])
    g = issues.groupby(["batch", "source"], sort=True)["is_issue"].agg(images="size", issues="sum").reset_index()
    g["issues"] = g["issues"].astype("int64")
    g["issue_rate"] = (g["issues"] / g["images"]).round(4)
    return g
