"""The deployed endpoint: the champion promoted in the registry (one atomic pointer write) and,
when a scoring service is configured, confirmed over HTTP: the service reports the new version
and answers the golden patches as the trained model did."""

import time

import dagster as dg
import pandas as pd

from defect_assets.defs.deploy.resources import ScoringService
from defect_assets.defs.metadata import md_table
from defect_assets.defs.resources import StorageResource
from defect_assets.serving.smoke import DeploymentError, golden_patches, smoke_test, wait_for_version
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

TEST_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")


class DeployConfig(dg.Config):
    service_url: str = ""
    """Scoring service to check; empty: the scoring_service resource's URL (DEFECT_ASSETS_SERVICE_URL).
    When both are empty the champion is promoted and nothing is checked over HTTP."""
    wait_seconds: float = 120.0
    """How long the service may take to report the new version (it polls the pointer)."""
    smoke_tolerance: float = 1e-4
    """Largest allowed difference between served and trained probabilities on the golden patches."""
    latency_requests: int = 5
    """Single-image requests timed for the smoke-test latency."""


def _number(value) -> float | None:
    return float(value) if value is not None and pd.notna(value) else None


@dg.asset(group_name="deploy", kinds={"fastapi", "python"})
def deployed_endpoint(context: dg.AssetExecutionContext, config: DeployConfig, champion_model: pd.DataFrame,
                      labeled_patches: dict[str, ArrayTable], artifact_store: StorageResource,
                      scoring_service: ScoringService) -> dg.Output[pd.DataFrame]:
    """The champion in production: promoted in the model registry with its threshold (one atomic
    write of the production pointer, after every file's hash is checked, so a crash leaves the
    pointer on a complete model), then, when a service URL is configured, confirmed: the
    service reports the new version and scores the model's golden patches as it did in
    training. Runs only when the champion's blocking checks pass."""
    registry = ModelRegistry(artifact_store.open())
    row = champion_model.iloc[0]
    version = str(row["model_version"])
    failed = str(row.get("failed_checks", "") or "")
    if failed and failed != "nan":
        # Blocking checks stop this asset inside the champion's run; this guards a later run too.
        raise dg.Failure(description=f"not deploying {version}: champion checks failed ({failed})")
    threshold = _number(row.get("threshold"))
    previous = registry.production()
    pointer = registry.promote(version, threshold=threshold, run_id=context.run.run_id,
                               evaluation_id=str(row.get("evaluation_id", "")) or None,
                               test_metrics={k: _number(row[k]) for k in TEST_METRICS if k in row.index})
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
        return dg.Output(pd.DataFrame([out]), metadata=meta)

    client = scoring_service.client(url)
    card = registry.card(version)
    ids, patches, expected = golden_patches(card, labeled_patches)
    t0 = time.perf_counter()
    try:
        wait_for_version(client, version, threshold, config.wait_seconds)
        took = time.perf_counter() - t0
        smoke = smoke_test(client, version, patches, expected, config.smoke_tolerance, config.latency_requests)
    except DeploymentError as e:
        raise dg.Failure(description=f"{version} is promoted but the endpoint check failed: {e}",
                         metadata={**meta, "service_url": dg.MetadataValue.url(url)}) from None
    context.log.info(f"{url} serves {version}: {smoke['golden_patches']} golden patches match the trained model "
                     f"(max difference {smoke['max_abs_difference']:.2g}); p50 latency {smoke['latency_ms_p50']} ms")
    out["smoke_latency_ms"] = smoke["latency_ms_p50"]
    meta.update({"service_url": dg.MetadataValue.url(url), "seconds_until_served": round(took, 2),
                 "smoke_latency_ms": smoke["latency_ms_p50"], "smoke_batch_latency_ms": smoke["batch_latency_ms"],
                 "golden_patches": smoke["golden_patches"], "max_abs_difference": smoke["max_abs_difference"],
                 "smoke_test": md_table(pd.DataFrame([smoke]))})
    return dg.Output(pd.DataFrame([out]), metadata=meta)


deploy_job = dg.define_asset_job(
    "deploy_job",
    selection=dg.AssetSelection.assets("deployed_endpoint"),
    description="Promote the current champion and check the scoring service serves it.",
)
