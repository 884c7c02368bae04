"""label_issues: the likely mislabeled images of every built batch (confident learning on
out-of-fold elastic-net probabilities over the cached backbone features). The logic is in
``pipeline/label_quality.py`` and ``ml/label_quality.py``."""

import dagster as dg
import pandas as pd

from defect_assets.defs.metadata import md_table, readable
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.labels import PAGE_SOURCE
from defect_assets.pipeline import label_quality
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.labeling import LABEL_ISSUES as LABEL_ISSUES_CSV
from defect_assets.storage.labeling import LabelLog

ISSUE_COUNTS_CSV = "label_quality/issue_counts.csv"


class LabelIssuesConfig(dg.Config):
    folds: int = 5
    """Folds of the out-of-fold probabilities (fewer when a label has fewer images)."""
    C: float = 0.05
    """The elastic net's inverse regularization (as the elastic_net family's default)."""
    l1_ratio: float = 0.5
    seed: int = 0
    shown: int = 20
    """Suspects listed in the metadata preview."""
    gold_items: int = 0
    """Write this many gold items (label-file images the out-of-fold model confidently agrees with)
    for the labeling queues to mix in (``LabelingQueueConfig.gold_rate``); 0 leaves the gold set alone."""


@dg.asset(group_name="label_quality", kinds={"python", "parquet"})
def label_issues(context: dg.AssetExecutionContext, config: LabelIssuesConfig,
                 backbone_features: dict[str, ArrayTable], raw_images: dict[str, ArrayTable],
                 image_labels: dict[str, pd.DataFrame], artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
    """Every labeled image with its given label, the label an out-of-fold model suggests, the
    self-confidence of the given label, the label's source and labeler; the suspects (cleanlab's
    label issues) first. Also written as CSV for BI (``label_quality/``), with counts per batch
    and source."""
    store = artifact_store.open()
    page = LabelLog(store).labels()
    rows, feats = [], []
    for batch in sorted(backbone_features):
        value = backbone_features[batch]
        r, x = label_quality.image_rows(batch, value.table, value.arrays["features"], raw_images[batch].table,
                                        image_labels[batch], page[page["batch"] == batch])
        rows.append(r)
        feats.append(x)
    import numpy as np

    table = pd.concat(rows, ignore_index=True)
    try:
        issues = label_quality.find_issues(table, np.concatenate(feats), config.folds, config.C, config.l1_ratio,
                                           config.seed)
    except ValueError as e:
        raise dg.Failure(str(e)) from None
    counts = label_quality.issue_counts(issues)
    store.write_bytes(LABEL_ISSUES_CSV, issues.to_csv(index=False).encode())
    store.write_bytes(ISSUE_COUNTS_CSV, counts.to_csv(index=False).encode())
    from defect_assets.serving.dashboard import write_labeler_csv

    write_labeler_csv(store)  # label_quality/labeler_quality.csv for BI (the dashboard shows it live)
    if config.gold_items > 0:
        from defect_assets.pipeline.label_quality import gold_candidates
        from defect_assets.storage.labeling import write_gold

        gold = gold_candidates(issues, config.gold_items, PAGE_SOURCE)
        write_gold(store, gold)
        context.log.info(f"label_issues: {len(gold)} gold items written for the labeling queues")
    n = int(issues["is_issue"].sum())
    context.log.info(f"label_issues: {n} suspects among {len(issues)} labeled images")
    shown = issues[issues["is_issue"]].head(config.shown)[["rank", "batch", "image", "given_label", "suggested_label",
                                                           "self_confidence", "source", "labeler"]]
    return dg.Output(issues, metadata=readable({"images": len(issues), "issues": n,
                                                "issue_rate": n / len(issues) if len(issues) else 0.0,
                                                "counts": md_table(counts), "worst": md_table(shown)}))
