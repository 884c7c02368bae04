"""The deployed endpoint: the champion promoted in the registry (one atomic pointer write) and,
when a scoring service is configured, confirmed over HTTP: the service reports the new version
and answers the golden inputs as the trained model did."""

import time

import dagster as dg
import pandas as pd

from defect_assets.defs.deploy.resources import ScoringService
from defect_assets.defs.evaluation.checks import promotion_decision
from defect_assets.defs.metadata import md_table, readable
from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline.champion import Champion
from defect_assets.pipeline.golden import golden_set
from defect_assets.serving.smoke import DeploymentError, smoke_test, wait_for_version
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry


class DeployConfig(dg.Config):
    service_url: str = ""
    """Scoring service to check; empty: the scoring_service resource's URL (DEFECT_ASSETS_SERVICE_URL).
    When both are empty the champion is promoted and nothing is checked over HTTP."""
    wait_seconds: float = 120.0
    """How long the service may take to report the new version (it polls the pointer)."""
    smoke_tolerance: float = 1e-4
    """Largest allowed difference between served and trained probabilities on the golden inputs."""
    latency_requests: int = 5
    """Single-image requests timed for the smoke-test latency."""


@dg.asset(group_name="deploy", kinds={"fastapi", "python"})
def deployed_endpoint(context: dg.AssetExecutionContext, config: DeployConfig, champion_model: Champion,
                      labeled_patches: dict[str, ArrayTable], artifact_store: StorageResource,
                      scoring_service: ScoringService) -> dg.Output[pd.DataFrame]:
    """The champion in production: promoted in the model registry with its threshold (one atomic
    write of the production pointer, after every file's hash is checked, so a crash leaves the
    pointer on a complete model), then, when a service URL is configured, confirmed: the
    service reports the new version and scores the model's golden inputs as it did in
    training. Runs only when every champion check passed on this champion."""
    store = artifact_store.open()
    registry = ModelRegistry(store)
    champion = champion_model
    version, threshold = champion.model_version, champion.threshold
    decision = promotion_decision(context.instance, store, champion)
    if not decision.approved:
        # Blocking checks stop this asset inside the champion's run; this guards a later run too.
        raise dg.Failure(description=f"not deploying {version}: {decision.reason()}",
                         metadata=readable({k: str(v) for k, v in decision.gates.items()}))
    previous = registry.production()
    pointer = registry.promote(version, threshold=threshold, run_id=context.run.run_id,
                               evaluation_id=champion.evaluation_id or None, test_metrics=champion.test_metrics)
    context.log.info(f"production -> {version} (threshold {threshold}); was "
                     f"{previous['version'] if previous else 'nothing'}")
    meta = {"model_version": version, "threshold": threshold if threshold is not None else "arg-max",
            "previous_version": previous["version"] if previous else "none", "promoted": pointer["promoted"]}
    url = (config.service_url or scoring_service.url).strip()
    out = {"model_version": version, "threshold": threshold, "promoted": pointer["promoted"], "service_url": url,
           "smoke_latency_ms": None}
    if not url:
        context.log.warning("no scoring service configured (DEFECT_ASSETS_SERVICE_URL): promoted, not checked")
        meta["service_url"] = "none configured: promoted only"
        return dg.Output(pd.DataFrame([out]), metadata=readable(meta))

    client = scoring_service.client(url)
    golden = golden_set(registry.card(version), labeled_patches, store)
    t0 = time.perf_counter()
    try:
        wait_for_version(client, version, threshold, config.wait_seconds)
        took = time.perf_counter() - t0
        smoke = smoke_test(client, version, golden.upload_bytes(), golden.expected, config.smoke_tolerance,
                           config.latency_requests)
    except DeploymentError as e:
        raise dg.Failure(description=f"{version} is promoted but the endpoint check failed: {e}",
                         metadata=readable({**meta, "service_url": dg.MetadataValue.url(url)})) from None
    context.log.info(f"{url} serves {version}: {smoke['golden_patches']} golden inputs match the trained model "
                     f"(max difference {smoke['max_abs_difference']:.2g}); p50 latency {smoke['latency_ms_p50']} ms")
    out["smoke_latency_ms"] = smoke["latency_ms_p50"]
    meta.update({"service_url": dg.MetadataValue.url(url), "seconds_until_served": took,
                 "smoke_latency_ms": smoke["latency_ms_p50"], "smoke_batch_latency_ms": smoke["batch_latency_ms"],
                 "golden_patches": smoke["golden_patches"],
                 "golden_whole_images": sum(k == "image" for k in golden.kinds),
                 "max_abs_difference": smoke["max_abs_difference"], "smoke_test": md_table(pd.DataFrame([smoke]))})
    return dg.Output(pd.DataFrame([out]), metadata=readable(meta))
