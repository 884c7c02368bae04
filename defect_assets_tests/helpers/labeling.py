"""Labelers, a labeling project (tiny model in production and a scored queue) and HTTP calls with a token."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pandas as pd

from defect_assets.ml.images import encode_png, sha256_bytes
from defect_assets.ml.scorer import load_registered
from defect_assets.ml.synthetic import make_surface_scene
from defect_assets.pipeline.active_learning import POOL_COLUMNS, QueueSettings, publish_next_queue
from defect_assets.pipeline.ingest import image_key
from defect_assets_tests.helpers.serving import model_registry

ANA = "ana-token-0123456789abcdef"

BEN = "ben-token-fedcba9876543210"

LABELERS = (("ana", ANA), ("ben", BEN))


def synthetic_pool(store, n: int = 6, batch: str = "line-9", seed: int = 4, size=(192, 160)) -> pd.DataFrame:
    """SYNTHETIC surface photos stored as ingestion stores them, as an unlabeled pool."""
    rows = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        img, _ = make_surface_scene(np.random.default_rng(child), size[0], size[1], defects=i % 3,
                                    min_separation=40)
        png = encode_png(img)
        sha = sha256_bytes(png)
        store.write_bytes(image_key(sha, "PNG"), png)
        rows.append({"batch": batch, "image": f"photo-{i:02d}.png", "image_id": sha,
                     "stored_key": image_key(sha, "PNG"), "width": size[0], "height": size[1]})
    return pd.DataFrame(rows, columns=POOL_COLUMNS)


def labeling_project(dest, per_round: int = 5, strategy: str = "entropy"):
    """A registry with the tiny model in production and a queue it scored."""
    store, registry, versions = model_registry(dest)
    registry.promote(versions["a"], threshold=0.5)
    queue = publish_next_queue(store, load_registered(registry, versions["a"]), synthetic_pool(store),
                               QueueSettings(strategy=strategy, per_round=per_round), heatmaps=True)
    return store, registry, versions, queue


def call(port: int, method: str, path: str, token: str | None = None, body=None, headers: dict | None = None,
         raw: bytes | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; ``body`` is sent as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def jcall(*args, **kwargs) -> tuple[int, dict]:
    status, _, data = call(*args, **kwargs)
    return status, json.loads(data or b"{}")
