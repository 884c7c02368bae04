"""Pretrained-backbone features of many patches, in shards: in this process, or on the Dask
cluster that ``DEFECT_ASSETS_DASK_ADDRESS`` names (``pipeline/engine.py``), where each worker
builds the frozen VGG16 extractor once per configuration."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from defect_assets.ml.backbone import VGG_BLOCKS
from defect_assets.pipeline import engine


def backbone_features(patches: np.ndarray, blocks: Sequence[int] = (3,), weights: str = "offline",
                      batch_size: int = 64, progress: engine.Progress | None = None,
                      address: str | None = None, shard_size: int = engine.DEFAULT_SHARD_SIZE) -> np.ndarray:
    """(N, H, W[, C]) uint8 patches -> (N, D) float32 mean- and max-pooled VGG16 activations of
    ``blocks`` (as ``ml.backbone.feature_extractor``), the same numbers wherever the shards ran."""
    x = np.asarray(patches)
    shape = (x.shape[1], x.shape[2], x.shape[3] if x.ndim == 4 else 1)
    config = engine.backbone_config(shape, blocks, weights, batch_size)
    empty = np.zeros((0, 2 * sum(VGG_BLOCKS[b][1] for b in blocks)), np.float32)
    # shards a whole number of batches long: the same batches as one pass over all patches
    shard = max(batch_size, shard_size // batch_size * batch_size)
    return engine.map_shards(engine.backbone_task, config, lambda s: np.ascontiguousarray(x[s.lo:s.hi]), len(x),
                             empty=empty, shard_size=shard, job="features", address=address, progress=progress)
