"""Logged prediction days, a reference score sample and the prediction_monitoring asset run over them."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from defect_assets.storage.layout import champion_predictions_key
from defect_assets.storage.prediction_log import PredictionLog, new_record

VERSION = "tiny_cnn-20261110T000000000-0000beef"

RNG = np.random.default_rng(12)

REFERENCE = RNG.beta(2, 5, 443)  # a test split's defect scores (443 patches, mostly ok)


def write_day(store, day: str, scores, version: str = VERSION, per_request: int = 2) -> list[dict]:
    """Scores as the service logs them: records through the writer, timestamped on ``day``."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC, hour=8)
    records = [new_record(request_id=f"{day}-{i // per_request}", route="predict", model_version=version,
                          sha256=f"{i:064x}", scores={"ok": 1 - s, "defect": s},
                          decision="defect" if s >= 0.5 else "ok", is_defect=bool(s >= 0.5), defect_score=float(s),
                          latency_ms=20.0 + (i // per_request) % 50, at=start + dt.timedelta(seconds=i))
               for i, s in enumerate(scores)]
    log = PredictionLog(store)
    log.add(records)
    assert log.flush() == len(records)
    return records


def write_reference(store, version: str = VERSION, scores=REFERENCE) -> None:
    """What champion_test_predictions stores for a model (only defect_score is read)."""
    with store.open_write(champion_predictions_key(version)) as f:
        pd.DataFrame({"patch_id": [f"p{i}" for i in range(len(scores))], "defect_score": scores}).to_parquet(f)


def monitor(store, days: list[str], warn_psi: float = 0.25, min_images: int = 200):
    from defect_assets.defs.io_manager import ArtifactIOManager
    from defect_assets.defs.monitoring.assets import prediction_monitoring
    from defect_assets.defs.resources import LocalStorage

    instance = dg.DagsterInstance.ephemeral()
    artifacts = LocalStorage(root=store.url)
    resources = {"artifact_store": artifacts, "io_manager": ArtifactIOManager(store=artifacts)}
    out = {}
    for day in days:
        result = dg.materialize([prediction_monitoring], partition_key=day, instance=instance, resources=resources,
                                run_config={"ops": {"prediction_monitoring": {"config": {
                                    "warn_psi": warn_psi, "min_images": min_images}}}})
        assert result.success
        [check] = result.get_asset_check_evaluations()
        out[day] = (result.output_for_node("prediction_monitoring"), check,
                    result.asset_materializations_for_node("prediction_monitoring")[0].metadata)
    return out


# A hand-made day: the first request after a model load took 5.1 s (the warm-up), five /v1/predict
# requests 40-48 ms, and one /v1/inspect request of a large photo 3.8 s.
TIMED_REQUESTS = [("predict", 5100.0, True), ("predict", 40.0, False), ("predict", 44.0, False),
                  ("inspect", 3800.0, False), ("predict", 48.0, False), ("predict", 42.0, False),
                  ("predict", 46.0, False)]


def write_timed_requests(store, day: str, requests=TIMED_REQUESTS, version: str = VERSION,
                         images_per_request: int = 2) -> list[dict]:
    """Records of (route, latency_ms, warmup) requests, ``images_per_request`` images each, as the
    service logs them."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC, hour=9)
    records = [new_record(request_id=f"{day}-r{k}", route=route, model_version=version, sha256=f"{k:032x}{i:032x}",
                          scores={"ok": 0.9, "defect": 0.1}, decision="ok", is_defect=False, defect_score=0.1,
                          latency_ms=latency, warmup=warmup, at=start + dt.timedelta(seconds=k, milliseconds=i))
               for k, (route, latency, warmup) in enumerate(requests) for i in range(images_per_request)]
    log = PredictionLog(store)
    log.add(records)
    assert log.flush() == len(records)
    return records
