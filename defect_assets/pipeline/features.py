"""Pretrained-backbone features of many patches, in shards: in this process, or on the Dask
cluster that ``DEFECT_ASSETS_DASK_ADDRESS`` names (``pipeline/engine.py``), where each worker
builds the frozen extractor once per configuration. With ``views`` > 1 the features of each
quarter turn and mirror are computed too (the test-time views a linear head averages)."""

from __future__ import annotations

import numpy as np

from defect_assets.ml.backbone import feature_dims
from defect_assets.ml.scorer import dihedral_views
from defect_assets.pipeline import engine


def backbone_features(patches: np.ndarray, spec: dict, batch_size: int = 32, views: int = 1,
                      progress: engine.Progress | None = None, address: str | None = None,
                      shard_size: int = engine.DEFAULT_SHARD_SIZE) -> np.ndarray:
    """(N, H, W[, C]) uint8 patches -> (N, D) float32 pooled activations (``views`` = 1), or
    (views, N, D) for the views of ``ml.scorer.dihedral_views`` (the identity first); the same
    numbers wherever the shards ran."""
    x = np.asarray(patches)
    if x.ndim == 3:
        x = x[..., None]
    config = engine.backbone_config(x.shape[1:], spec, batch_size)
    empty = np.zeros((0, feature_dims(spec)), np.float32)
    # shards a whole number of batches long: the same batches as one pass over all patches
    shard = max(batch_size, shard_size // batch_size * batch_size)
    out = []
    for k, view in enumerate(dihedral_views(x, views) if views > 1 else [x]):
        def tell(i, n, k=k):
            if progress:
                progress(k * n + i, views * n)

        out.append(engine.map_shards(engine.backbone_task, config, lambda s, v=view: np.ascontiguousarray(v[s.lo:s.hi]),
                                     len(x), empty=empty, shard_size=shard, job=f"features-view{k}", address=address,
                                     progress=tell))
    return out[0] if views == 1 else np.stack(out)
