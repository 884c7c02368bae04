"""Per-image work in shards: in this process (the default), or over a Dask distributed cluster
when ``DEFECT_ASSETS_DASK_ADDRESS`` names its scheduler (``tcp://host:8786``). No Dagster here.

A *task* is a module-level function ``task(config, payload, cache) -> np.ndarray`` of N rows for
N images: ``config`` is a small dict of plain values (what to load: a backbone's blocks, a model
version and the store it lives in), ``payload`` is one shard's images (a uint8 array of patches or
a list of object keys), ``cache`` keeps what the task loaded. In this process the cache lives for
one ``map_shards`` call, exactly as the code ran before the engine existed; on a Dask worker it is
the worker's own, so each worker loads a model once (per config), not once per shard.

Dask moves only plain values, object keys and NumPy arrays between processes; nothing it moves is
written anywhere (no pickle is stored). Each shard has an id; results are collected by id (a shard
that Dask recomputed after losing a worker counts once) and assembled in shard order, and the
assembly refuses anything but exactly one result per shard with the shard's row count.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from defect_assets.pipeline.settings import PipelineSettings

DASK_ADDRESS_ENV = PipelineSettings.env("dask_address")
DEFAULT_SHARD_SIZE = 256  # images per shard: a multiple of the backbone's batch of 64
WORKER_CACHE_ENTRIES = 2  # loaded models kept per worker (a new version evicts the oldest)
SUBMIT_RETRIES = 2

Task = Callable[[dict, Any, "LoadCache"], np.ndarray]
Progress = Callable[[int, int], None]


def dask_address(environ: dict | None = None) -> str:
    """The scheduler's address from the environment ('' = run in this process)."""
    return PipelineSettings.load(environ).dask_address


@dataclass(frozen=True)
class Shard:
    id: str
    """Stable within one ``map_shards`` call: the job's name and the shard's index."""
    index: int
    lo: int
    hi: int


def plan_shards(n: int, shard_size: int, job: str = "shard") -> list[Shard]:
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, not {shard_size}")
    return [Shard(f"{job}-{i:06d}", i, lo, min(lo + shard_size, n)) for i, lo in enumerate(range(0, n, shard_size))]


class LoadCache:
    """What tasks loaded, by (kind, config): at most ``entries`` of them, the oldest evicted.
    ``loads`` counts real loads per kind (what the tests read to see one load per worker)."""

    def __init__(self, entries: int = WORKER_CACHE_ENTRIES):
        self.entries, self._items, self._lock = entries, OrderedDict(), threading.Lock()
        self.loads: dict[str, int] = {}

    def get(self, kind: str, config: dict, load: Callable[[], Any]) -> Any:
        key = kind + ":" + json.dumps(config, sort_keys=True, default=str)
        with self._lock:  # one load per key even if a worker runs several threads
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = load()
            self.loads[kind] = self.loads.get(kind, 0) + 1
            self._items[key] = value
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
            return value


_WORKER_CACHE = LoadCache()  # one per worker process: lives as long as the worker


def worker_loads() -> dict[str, int]:
    """Loads done by this process's worker cache (``client.run(worker_loads)`` asks every worker)."""
    return dict(_WORKER_CACHE.loads)


def warm_worker(task: Task, config: dict, payload) -> int:
    """Run ``task`` once on a sample so this worker has loaded what it needs before real shards
    arrive (``client.run(warm_worker, task, config, sample)`` warms every worker); returns its rows."""
    return len(task(config, payload, _WORKER_CACHE))


def _run_on_worker(task: Task, config: dict, shard_id: str, payload) -> tuple[str, np.ndarray]:
    return shard_id, np.asarray(task(config, payload, _WORKER_CACHE))


def assemble(shards: Sequence[Shard], results: dict[str, np.ndarray]) -> np.ndarray:
    """The shards' results in order, one per shard id, each with the shard's row count."""
    missing = [s.id for s in shards if s.id not in results]
    extra = sorted(set(results) - {s.id for s in shards})
    if missing or extra:
        raise RuntimeError(f"shard results incomplete: missing {missing[:5]}, unexpected {extra[:5]}")
    for s in shards:
        if len(results[s.id]) != s.hi - s.lo:
            raise RuntimeError(f"shard {s.id} returned {len(results[s.id])} rows for {s.hi - s.lo} images")
    return np.concatenate([results[s.id] for s in shards])


def map_shards(task: Task, config: dict, payload: Callable[[Shard], Any], n: int, *,
               empty: np.ndarray, shard_size: int = DEFAULT_SHARD_SIZE, job: str = "shard",
               address: str | None = None, progress: Progress | None = None) -> np.ndarray:
    """``task`` over the ``n`` images in shards of ``shard_size``; ``payload(shard)`` gives one
    shard's images. ``address``: a Dask scheduler (None: ``DEFECT_ASSETS_DASK_ADDRESS``; '': this
    process). ``empty`` is the result for no images."""
    shards = plan_shards(n, shard_size, job)
    if not shards:
        return empty
    address = dask_address() if address is None else address
    if not address:
        cache, results = LoadCache(), {}
        for s in shards:
            results[s.id] = np.asarray(task(config, payload(s), cache))
            if progress:
                progress(s.hi, n)
        return assemble(shards, results)
    return assemble(shards, _map_on_dask(address, task, config, payload, shards, n, progress))


def _map_on_dask(address: str, task: Task, config: dict, payload: Callable[[Shard], Any],
                 shards: list[Shard], n: int, progress: Progress | None) -> dict[str, np.ndarray]:
    from distributed import Client, as_completed

    call = uuid.uuid4().hex[:12]  # task keys unique per call, so two calls never share a result
    with Client(address, set_as_default=False, timeout="30s") as client:
        futures = [client.submit(_run_on_worker, task, config, s.id, payload(s), key=f"{s.id}-{call}",
                                 pure=False, retries=SUBMIT_RETRIES) for s in shards]
        results: dict[str, np.ndarray] = {}
        done = 0
        for future in as_completed(futures, loop=client.loop):
            shard_id, rows = future.result()
            if shard_id in results:  # recomputed after a lost worker: the first result stands
                continue
            results[shard_id] = rows
            done += len(rows)
            if progress:
                progress(done, n)
        return results


# Tasks (module-level, so a worker imports them by name).

def backbone_task(config: dict, patches: np.ndarray, cache: LoadCache) -> np.ndarray:
    """(n, H, W[, C]) uint8 patches -> (n, D) pooled backbone features. ``config``: input_shape,
    spec (``ml.backbone.make_extractor``: backbone, stages or blocks), batch_size."""
    from defect_assets.ml.backbone import extract_features, make_extractor

    model = cache.get("backbone", {k: v for k, v in config.items() if k != "batch_size"},
                      lambda: make_extractor(config["spec"], tuple(config["input_shape"])))
    return extract_features(model, patches, int(config["batch_size"]))


def backbone_config(input_shape: tuple[int, int, int], spec: dict, batch_size: int = 32) -> dict:
    return {"input_shape": [int(d) for d in input_shape], "spec": dict(spec), "batch_size": int(batch_size)}


def scorer_task(config: dict, keys: list[str], cache: LoadCache) -> np.ndarray:
    """Object keys of images -> (n, K) class probabilities of registered model ``version``,
    loaded through the one inference seam (``ml.scorer.load_registered``) from the store that
    ``config['store']`` (a ``storage.env.StoreConfig`` as a dict, no secret in it) names."""
    from defect_assets.ml.scorer import load_registered
    from defect_assets.storage.env import StoreConfig
    from defect_assets.storage.registry import ModelRegistry

    def load():
        store = StoreConfig(**config["store"]).open()
        return store, load_registered(ModelRegistry(store), config["version"])

    store, scorer = cache.get("scorer", config, load)
    return scorer.predict_images([store.read_bytes(k) for k in keys])
