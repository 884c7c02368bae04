"""unlabeled_pool (per batch) and labeling_queue: the images nobody labeled yet, scored by the
production model through the one inference seam and ranked by an active-learning strategy for
the labeling page. The logic is in ``pipeline/active_learning.py``."""

from typing import Literal

import dagster as dg
import pandas as pd

from defect_assets.defs.deploy.resources import ScoringService
from defect_assets.defs.metadata import md_table, readable
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.patches.assets import stored_patch_tables
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.backbone import LITE_STAGES
from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline import active_learning
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.labeling import LabelLog
from defect_assets.storage.registry import ModelRegistry

LABELING_PAGE = "/label"


@dg.asset(partitions_def=batch_partitions, group_name="active_learning", kinds={"python", "parquet"})
def unlabeled_pool(context: dg.AssetExecutionContext, raw_images: ArrayTable,
                   image_labels: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """The accepted images of one batch that no label names (no label file, a file that labels
    only some images, and no label from the labeling page yet): what active learning may ask a
    person to label."""
    pool = active_learning.unlabeled_pool(context.partition_key, raw_images.table, image_labels)
    images = int((raw_images.table["role"] == "image").sum())
    return dg.Output(pool, metadata=readable({"unlabeled_images": len(pool), "images": images,
                                              "labeled_images": images - len(pool),
                                              "preview": md_table(pool[["image", "width", "height"]])}))


class LabelingQueueConfig(dg.Config):
    strategy: Literal["entropy", "margin", "least_confidence", "random", "entropy+clusters"] = "entropy"
    """'entropy', 'margin', 'least_confidence' (worst best-score), 'random' (the baseline) or
    'entropy+clusters' (k-means of the pool into per_round clusters in the backbone's feature space,
    the highest entropy of each; bench/results/active_learning.txt)."""
    per_round: int = 20
    """Images queued per round."""
    diversity: bool = False
    """Spread the picks in the pretrained backbone's feature space (greedy k-center over the
    shortlist_factor x per_round most uncertain images)."""
    shortlist_factor: int = 5
    feature_backbone: Literal["lite0", "lite2", "vgg16"] = "lite0"
    """The pretrained backbone whose pooled stage activations are the feature space of the diversity
    step and of entropy+clusters."""
    feature_stages: list[str] = list(LITE_STAGES)
    """EfficientNet-Lite stages pooled (backbone lite0 / lite2)."""
    feature_blocks: list[int] = [3, 4]
    """VGG16 blocks pooled (backbone vgg16)."""
    seed: int = 0
    """Seeds the random strategy."""
    gold_rate: float = 0.0
    """Share of each queue that is gold items (known labels, written by label_issues) mixed in to
    measure the labelers; their answers are never stored as labels. 0 = none."""


def feature_spec_pairs(config: LabelingQueueConfig) -> tuple:
    if config.feature_backbone == "vgg16":
        return (("backbone", "vgg16"), ("blocks", tuple(config.feature_blocks)), ("weights", "offline"))
    return (("backbone", config.feature_backbone), ("stages", tuple(config.feature_stages)),
            ("runtime", "onnxruntime"))


@dg.asset(group_name="active_learning", kinds={"tensorflow", "parquet"}, deps=["deployed_endpoint"])
def labeling_queue(context: dg.AssetExecutionContext, config: LabelingQueueConfig,
                   unlabeled_pool: dict[str, pd.DataFrame], artifact_store: StorageResource,
                   scoring_service: ScoringService) -> dg.MaterializeResult:
    """The next images a person should label: the unlabeled pool of every batch scored by the
    production model (through the one inference seam), ranked by the strategy, ``per_round`` of
    them. Each item records the strategy, the model version and its scores. Published as the
    labeling page's current queue; rebuilt after each deployment, so the new champion scores
    the next round."""
    try:
        settings = active_learning.QueueSettings(config.strategy, config.per_round, config.diversity,
                                                 config.shortlist_factor, feature_spec_pairs(config), config.seed,
                                                 config.gold_rate)
    except ValueError as e:
        raise dg.Failure(str(e)) from None
    store = artifact_store.open()
    registry = ModelRegistry(store)
    production = registry.production()
    if production is None:
        raise dg.Failure("no production model to score the pool with: run deploy_job (or retrain_job) first")
    scorer = load_registered(registry, production["version"])
    pool = pd.concat([unlabeled_pool[b] for b in sorted(unlabeled_pool)], ignore_index=True)
    trained_on = set(scorer.card.data_version.batches if scorer.card.data_version else [])
    windowed = active_learning.windowed_model([t for b, t in stored_patch_tables(store).items() if b in trained_on])
    queue = active_learning.publish_next_queue(store, scorer, pool, settings, windowed, {"run_id": context.run.run_id},
                                               progress=lambda i, n: context.log.info(
                                                   f"labeling_queue: {i}/{n} pool images scored"),
                                               store_config=artifact_store.store_config())
    items = queue.items
    progress = active_learning.record_round(store, queue, len(LabelLog(store).labels()), production.get("test_metrics"))
    context.log.info(f"labeling_queue {queue.id}: {len(items)} of {len(pool)} pool images by {config.strategy}, "
                     f"scored by {scorer.version}")
    shown = items[["rank", "batch", "image", "guess", "guess_probability", "score"]].copy()
    meta = {"queue": queue.id, "items": len(items), "pool_images": len(pool), "strategy": config.strategy,
            "diversity": config.diversity, "model_version": scorer.version,
            "mean_entropy_queued": float(items["entropy"].mean()) if len(items) else 0.0,
            "round": int(progress["round"].iloc[-1]) if len(progress) else 0,
            "queue_preview": md_table(shown)}
    if scoring_service.url:
        meta["labeling_page"] = dg.MetadataValue.url(scoring_service.url.rstrip("/") + LABELING_PAGE)
    return dg.MaterializeResult(metadata=readable(meta))
