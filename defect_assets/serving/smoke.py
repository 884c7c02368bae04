"""Checking a deployment from the outside: wait until the service reports the promoted model,
then send it the model's golden inputs (``pipeline.golden``: full-size source photos for
image-level labels, the window around the mark for points and boxes) and compare what comes
back with the probabilities the trained model gave them (recorded in its card). Standard
library and the client only; the ``deployed_endpoint`` asset calls these."""

from __future__ import annotations

import statistics
import time

import numpy as np

from defect_assets.serving.client import DefectClient, ServiceError


class DeploymentError(RuntimeError):
    """The service did not take the new model, or it answers differently from the trained one."""


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


def smoke_test(client: DefectClient, version: str, uploads: list[bytes], expected: np.ndarray,
               tolerance: float = 1e-4, latency_requests: int = 5) -> dict:
    """Score the golden inputs over HTTP (one request with all of them, then a few single-image
    requests for latency); every answer must name ``version`` and match ``expected``."""
    if len(uploads) == 0:
        raise DeploymentError("no golden inputs to smoke-test with (none of the card's golden patches was found "
                              "with its source image)")
    pngs = list(uploads)
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
