"""Checking a deployment from the outside: wait until the service reports the promoted model,
then send it the model's golden patches as PNG files and compare what comes back with the
probabilities the trained model gave them (recorded in its card). No Dagster here; the
``deployed_endpoint`` asset calls these."""

from __future__ import annotations

import statistics
import time

import numpy as np

from defect_assets.ml.images import encode_png
from defect_assets.pipeline.patching import patches_of
from defect_assets.serving.client import DefectClient, ServiceError
from defect_assets.storage.formats import ArrayTable


class DeploymentError(RuntimeError):
    """The service did not take the new model, or it answers differently from the trained one."""


def golden_patches(card: dict, patch_sets: dict[str, ArrayTable]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(patch ids, patches, recorded probabilities) of the card's golden set found in the patch sets."""
    golden = card.get("golden") or {}
    ids = [str(i) for i in golden.get("patch_ids", [])]
    wanted = set(ids)
    found: dict[str, np.ndarray] = {}
    for ps in patch_sets.values():
        rows = [i for i, pid in enumerate(ps.table["patch_id"].astype(str)) if pid in wanted]
        if rows:
            px = np.asarray(patches_of(ps))[rows]
            found.update(zip(ps.table["patch_id"].astype(str).iloc[rows], px))
    keep = [i for i, pid in enumerate(ids) if pid in found]
    if not keep:
        return [], np.zeros((0,), np.uint8), np.zeros((0, len(card.get("classes", []))), np.float32)
    proba = np.asarray(golden["proba"], np.float64)[keep]
    return [ids[i] for i in keep], np.stack([found[ids[i]] for i in keep]), proba


def wait_for_version(client: DefectClient, version: str, threshold: float | None, timeout: float,
                     poll: float = 0.5) -> dict:
    """Poll /v1/model until it names ``version`` (and ``threshold`` for a binary model)."""
    deadline, seen = time.monotonic() + timeout, "nothing yet"
    while True:
        try:
            info = client.model()
            seen = f"{info['model_version']} (threshold {info.get('threshold')})"
            same_threshold = threshold is None or info.get("threshold") is None or \
                abs(float(info["threshold"]) - threshold) <= 1e-9
            if info["model_version"] == version and same_threshold:
                return info
            if (info.get("last_reload_error") or {}).get("version") == version:
                raise DeploymentError(f"the service at {client.url} failed to load {version}: "
                                      f"{info['last_reload_error']['error']}")
        except ServiceError as e:
            if e.status in (401, 403):
                raise DeploymentError(f"the service at {client.url} refused the API key: {e.detail}") from None
            seen = str(e)
        if time.monotonic() >= deadline:
            raise DeploymentError(f"the service at {client.url} did not report {version} within {timeout:.0f}s "
                                  f"(last seen: {seen})")
        time.sleep(poll)


def smoke_test(client: DefectClient, version: str, patches: np.ndarray, expected: np.ndarray,
               tolerance: float = 1e-4, latency_requests: int = 5) -> dict:
    """Score the golden patches over HTTP (one request with all of them, then a few single-image
    requests for latency); every answer must name ``version`` and match ``expected``."""
    if len(patches) == 0:
        raise DeploymentError("no golden patches to smoke-test with (none of the card's golden ids are in "
                              "labeled_patches)")
    pngs = [encode_png(p) for p in patches]
    t0 = time.perf_counter()
    results = client.predict(pngs)
    batch_ms = (time.perf_counter() - t0) * 1000
    singles = []
    for png in pngs[:max(1, latency_requests)]:
        t = time.perf_counter()
        results_one = client.predict([png])
        singles.append((time.perf_counter() - t) * 1000)
        if results_one[0]["model_version"] != version:
            raise DeploymentError(f"a smoke request was scored by {results_one[0]['model_version']}, not {version}")
    versions = {r["model_version"] for r in results}
    if versions != {version}:
        raise DeploymentError(f"smoke requests were scored by {sorted(versions)}, not {version}")
    classes = list(results[0]["probabilities"])
    got = np.array([[r["probabilities"][c] for c in classes] for r in results], np.float64)
    diff = float(np.abs(got - expected).max())
    if diff > tolerance:
        raise DeploymentError(f"the service's probabilities on {len(got)} golden patches differ from the trained "
                              f"model's by up to {diff:.3g} (tolerance {tolerance:g})")
    return {"golden_patches": len(got), "max_abs_difference": diff, "batch_latency_ms": round(batch_ms, 2),
            "latency_ms_p50": round(statistics.median(singles), 2), "latency_ms_max": round(max(singles), 2)}
