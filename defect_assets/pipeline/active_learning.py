"""Active learning without Dagster: the unlabeled pool of a batch, the pool scored through the
one inference seam (``ml.scorer``), and the labeling queue picked by a strategy of
``ml.active_learning`` (optionally spread out in the pretrained backbone's feature space). Pool
scoring runs its shards on Dask when a scheduler is configured (``pipeline/engine.py``)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defect_assets.ml.active_learning import (
    FEATURE_STRATEGIES,
    STRATEGIES,
    entropy,
    least_confidence,
    margin,
    select,
)
from defect_assets.ml.scorer import Scorer
from defect_assets.pipeline import engine
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.env import StoreConfig
from defect_assets.storage.labeling import LabelingQueue, publish_queue, read_gold

POOL_COLUMNS = ["batch", "image", "image_id", "stored_key", "width", "height"]
SCORE_CHUNK = 128  # images decoded and scored per call: bounded memory for any pool
QUEUE_COLUMNS = ["item_id", "rank", "batch", "image", "image_id", "stored_key", "width", "height", "strategy",
                 "diversity", "model_version", "score", "least_confidence", "margin", "entropy", "guess",
                 "guess_probability", "probabilities", "gold_label"]
"""``gold_label``: the known label of a gold item mixed in to check the labeler ("" for a real item)."""


def unlabeled_pool(batch: str, inventory: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The accepted images of a batch that no label of any source names (a batch that arrived
    without a label file is all pool)."""
    images = inventory[inventory["role"] == "image"].drop_duplicates("path")
    labeled = set(labels["image"].astype(str))
    pool = images[~images["path"].astype(str).isin(labeled)]
    out = pd.DataFrame({"batch": batch, "image": pool["path"].astype(str), "image_id": pool["sha256"].astype(str),
                        "stored_key": pool["stored_key"].astype(str), "width": pool["width"].astype("int64"),
                        "height": pool["height"].astype("int64")}, columns=POOL_COLUMNS)
    return out.sort_values("image", kind="stable").reset_index(drop=True)


def item_id(batch: str, image: str) -> str:
    """A queue item's id: the image's place (batch + path), stable across queues."""
    return hashlib.sha256(f"{batch}\n{image}".encode()).hexdigest()[:16]


def score_pool(scorer: Scorer, pool: pd.DataFrame, store: ObjectStore,
               progress: Callable[[int, int], None] | None = None, store_config: StoreConfig | None = None,
               address: str | None = None) -> np.ndarray:
    """(N, K) class probabilities of every pool image, through the scorer's own preprocessing, in
    shards of ``SCORE_CHUNK`` images. With a Dask scheduler (``address``, default from
    ``DEFECT_ASSETS_DASK_ADDRESS``) the shards run on its workers, each loading the scorer's model
    version once from the store that ``store_config`` names and reading the images itself."""
    empty = np.zeros((0, len(scorer.classes)), np.float32)
    keys = pool["stored_key"].astype(str).tolist()
    address = engine.dask_address() if address is None else address
    if address:
        if store_config is None:
            raise ValueError(f"{engine.DASK_ADDRESS_ENV} is set, but the store has no configuration that Dask "
                             "workers can open (a local folder or an Azure container)")
        config = {"store": dataclasses.asdict(store_config), "version": scorer.version}
        return engine.map_shards(engine.scorer_task, config, lambda s: keys[s.lo:s.hi], len(keys), empty=empty,
                                 shard_size=SCORE_CHUNK, job="pool", address=address, progress=progress)

    def here(_config, shard_keys, _cache):  # the scorer this process already loaded
        return scorer.predict_images([store.read_bytes(k) for k in shard_keys])

    return engine.map_shards(here, {}, lambda s: keys[s.lo:s.hi], len(keys), empty=empty, shard_size=SCORE_CHUNK,
                             job="pool", address="", progress=progress)


def pool_features(scorer: Scorer, pool: pd.DataFrame, store: ObjectStore, spec: dict) -> np.ndarray:
    """Pretrained-backbone features of every pool image as the scorer prepares it (for the
    diversity step: distances between images, not a prediction)."""
    from defect_assets.pipeline.features import backbone_features

    patches = np.stack([scorer.prepare(store.read_bytes(k)) for k in pool["stored_key"]])
    return backbone_features(patches, spec)


def build_queue(pool: pd.DataFrame, proba: np.ndarray, classes: list[str], model_version: str, strategy: str,
                per_round: int, seed: int = 0, features: np.ndarray | None = None,
                shortlist_factor: int = 5) -> pd.DataFrame:
    """The items a person should label next, in order: the pool row, the strategy's score, all
    three uncertainty measures, the model's guess and its class probabilities. ``features`` are
    needed by ``entropy+clusters`` and turn on the diversity step for the others."""
    if len(proba) != len(pool):
        raise ValueError(f"{len(proba)} score rows for a pool of {len(pool)} images")
    if not len(pool):
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    query = select(proba, per_round, strategy, seed, features, shortlist_factor)
    picks = query.picks
    chosen = pool.iloc[picks].reset_index(drop=True)
    p = np.asarray(proba, np.float64)[picks]
    guess = p.argmax(axis=1)
    items = chosen.assign(
        item_id=[item_id(b, i) for b, i in zip(chosen["batch"], chosen["image"])],
        rank=np.arange(1, len(picks) + 1), strategy=strategy, diversity=query.diversity,
        model_version=model_version, score=query.scores[picks],
        least_confidence=least_confidence(p), margin=margin(p), entropy=entropy(p),
        guess=[classes[g] for g in guess], guess_probability=p[np.arange(len(p)), guess],
        probabilities=[list(map(float, row)) for row in p], gold_label="")
    return items[QUEUE_COLUMNS]


def gold_count(real_items: int, rate: float, available: int) -> int:
    """Gold items to mix into a queue of ``real_items`` so that they are ``rate`` of the whole."""
    if rate <= 0 or available <= 0 or real_items <= 0:
        return 0
    return min(available, max(1, int(round(rate * real_items / (1.0 - rate)))))


def mix_gold(items: pd.DataFrame, gold: pd.DataFrame, gold_proba: np.ndarray, classes: list[str],
             model_version: str, rate: float, seed: int = 0) -> pd.DataFrame:
    """The queue with gold items (known labels, ``storage.labeling.GOLD_ITEMS``) at random places,
    ``rate`` of the whole; each shows the model's guess like any item and carries its
    ``gold_label`` (never shown; the labeling desk scores the answer instead of storing a label)."""
    if len(gold_proba) != len(gold):
        raise ValueError(f"{len(gold_proba)} score rows for {len(gold)} gold items")
    n = gold_count(len(items), rate, len(gold))
    if n == 0:
        return items
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(gold), n, replace=False))
    g = gold.iloc[pick].reset_index(drop=True)
    p = np.asarray(gold_proba, np.float64)[pick]
    guess = p.argmax(axis=1)
    rows = g[POOL_COLUMNS].assign(
        item_id=[item_id("gold:" + b, i) for b, i in zip(g["batch"], g["image"])], rank=0, strategy="gold",
        diversity=False, model_version=model_version, score=0.0, least_confidence=least_confidence(p),
        margin=margin(p), entropy=entropy(p), guess=[classes[k] for k in guess],
        guess_probability=p[np.arange(len(p)), guess], probabilities=[list(map(float, r)) for r in p],
        gold_label=g["label"].astype(str))[QUEUE_COLUMNS]
    out = items.sort_values("rank").to_dict("records")
    for row, at in zip(rows.to_dict("records"), np.sort(rng.integers(0, len(out) + 1, n))[::-1]):
        out.insert(int(at), row)
    mixed = pd.DataFrame(out, columns=QUEUE_COLUMNS)
    mixed["rank"] = np.arange(1, len(mixed) + 1)
    return mixed


def windowed_model(patch_tables: list[pd.DataFrame]) -> bool:
    """Whether a model learned from windows cut around points or boxes (the dent workflow), so a
    heatmap of its windows over a larger photo means something; a model of whole images has none."""
    return any(t["kind"].isin(["point", "box", "negative"]).any() for t in patch_tables if len(t))


@dataclass(frozen=True)
class QueueSettings:
    strategy: str = "entropy"
    per_round: int = 20
    diversity: bool = False
    shortlist_factor: int = 5
    feature_spec: tuple[tuple[str, object], ...] = (("backbone", "lite0"), ("stages", ("4", "5", "6", "top")),
                                                    ("runtime", "onnxruntime"))
    """The backbone of the diversity step's feature space (``ml.backbone.make_extractor``), as pairs."""
    seed: int = 0
    gold_rate: float = 0.0
    """Share of each queue that is gold items (known labels) to measure the labelers; 0 = none."""

    def __post_init__(self):
        if not 0.0 <= self.gold_rate < 1.0:
            raise ValueError(f"gold_rate must be in [0, 1), got {self.gold_rate}")
        if self.strategy not in STRATEGIES + FEATURE_STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not one of {', '.join(STRATEGIES + FEATURE_STRATEGIES)}")
        if self.per_round < 1 or self.shortlist_factor < 1:
            raise ValueError(f"per_round and shortlist_factor must be >= 1, got {self.per_round}, "
                             f"{self.shortlist_factor}")


def publish_next_queue(store: ObjectStore, scorer: Scorer, pool: pd.DataFrame, settings: QueueSettings,
                       heatmaps: bool, extra: dict | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       store_config: StoreConfig | None = None) -> LabelingQueue:
    """Score the pool with ``scorer``, pick the round, and publish it as the labeling page's
    current queue. ``heatmaps``: the scorer's model learned from windows (``windowed_model``)."""
    proba = score_pool(scorer, pool, store, progress, store_config)
    spec = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.feature_spec}
    needs_features = settings.diversity or settings.strategy in FEATURE_STRATEGIES
    features = pool_features(scorer, pool, store, spec) if needs_features and len(pool) else None
    items = build_queue(pool, proba, scorer.classes, scorer.version, settings.strategy, settings.per_round,
                        settings.seed, features, settings.shortlist_factor)
    gold = read_gold(store) if settings.gold_rate > 0 else None
    if gold is not None and len(items):
        gold = gold[gold["label"].astype(str).isin(scorer.classes)].reset_index(drop=True)
        if gold_count(len(items), settings.gold_rate, len(gold)):
            items = mix_gold(items, gold, score_pool(scorer, gold, store, None, store_config), scorer.classes,
                             scorer.version, settings.gold_rate, settings.seed)
    return publish_queue(store, items, {
        "strategy": settings.strategy, "per_round": settings.per_round, "diversity": settings.diversity,
        "model_version": scorer.version, "classes": scorer.classes, "input_size": scorer.input_size,
        "heatmaps": bool(heatmaps), "pool_images": len(pool), "gold_rate": settings.gold_rate,
        "gold_items": int((items["gold_label"] != "").sum()) if len(items) else 0,
        "pool_batches": sorted(set(pool["batch"])),
        **(extra or {})})


PROGRESS_COLUMNS = ["round", "published", "queue", "model_version", "strategy", "pool_images", "queued",
                    "page_labels", "test_accuracy", "test_roc_auc"]


def record_round(store: ObjectStore, queue: LabelingQueue, page_labels: int,
                 test_metrics: dict | None) -> pd.DataFrame:
    """Append one row per published queue to ``active_learning/progress.csv`` (the dashboard's
    active-learning chart): the round, the model that scored it with its test accuracy and ROC AUC,
    the pool, and how many labels the page had stored by then. Rewritten whole, atomically; a
    queue already recorded is not added twice."""
    from defect_assets.storage.layout import ACTIVE_LEARNING_PROGRESS

    old = (pd.read_csv(io.BytesIO(store.read_bytes(ACTIVE_LEARNING_PROGRESS)))
           if store.exists(ACTIVE_LEARNING_PROGRESS) else pd.DataFrame(columns=PROGRESS_COLUMNS))
    if queue.id in set(old["queue"].astype(str)):
        return old
    metrics = test_metrics or {}
    row = {"round": len(old), "published": queue.doc.get("created"),
           "queue": queue.id, "model_version": queue.doc.get("model_version"), "strategy": queue.doc.get("strategy"),
           "pool_images": queue.doc.get("pool_images"), "queued": len(queue.items), "page_labels": int(page_labels),
           "test_accuracy": metrics.get("accuracy"), "test_roc_auc": metrics.get("roc_auc")}
    table = pd.concat([old, pd.DataFrame([row], columns=PROGRESS_COLUMNS)], ignore_index=True)
    store.write_bytes(ACTIVE_LEARNING_PROGRESS, table.to_csv(index=False).encode())
    return table
