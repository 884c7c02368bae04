"""The deployed_endpoint asset: it never runs behind a failed champion check; it promotes the
champion with its threshold; with a service configured it waits for the service to report the
new version and smoke-tests it over HTTP on the golden patches; a service that never takes the
model fails the asset with the reason."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from defect_assets.defs.deploy.assets import deployed_endpoint
from defect_assets.defs.deploy.resources import ScoringService, scoring_service_from_env
from defect_assets.defs.evaluation.assets import CHECK_RECALL, champion_model, evaluation_assets
from defect_assets.defs.ingest.assets import image_labels, raw_images
from defect_assets.defs.models.assets import (
    backbone_features,
    elastic_net_model,
    fine_tuned_vgg16_model,
    scratch_cnn_model,
)
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.patches.assets import augmented_training_set, labeled_patches
from defect_assets.defs.resources import default_resources
from defect_assets.pipeline.evaluate import HISTORY_COLUMNS
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage.formats import write_value
from defect_assets_tests.test_serving import API_KEY, ServiceThread, model_registry

# the real graph up to deployment; only the last two run, the rest is read from the store
ASSETS = [raw_images, image_labels, labeled_patches, augmented_training_set, backbone_features, scratch_cnn_model,
          fine_tuned_vgg16_model, elastic_net_model, *evaluation_assets, champion_model, deployed_endpoint]
SELECTED = [champion_model, deployed_endpoint]


@pytest.fixture
def evaluated(tmp_path):
    """A registry with the tiny model as every family's evaluated candidate, its patches stored
    as labeled_patches of batch 'synthetic' (as the real upstream assets would leave them)."""
    store, registry, versions = model_registry(tmp_path / "data")
    for family in ("scratch_cnn", "fine_tuned_vgg16", "elastic_net"):
        row = {c: None for c in HISTORY_COLUMNS} | {
            "evaluation_id": f"eval-test-{family}", "evaluated_at": "2026-11-23T00:00:00+00:00",
            "model_family": family, "model_version": versions["a"], "task": "binary", "threshold": 0.4,
            "accuracy": 0.9, "balanced_accuracy": 0.9, "precision": 0.9, "recall": 0.8, "f1": 0.85,
            "roc_auc": 0.95, "pr_auc": 0.9, "test_patches": 14}
        write_value(store, f"{family}_evaluation/__all__", pd.DataFrame([row]))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["synthetic"])
    return tmp_path / "data", store, registry, versions, instance


def deploy(evaluated, service: ScoringService, ops: dict | None = None):
    data_dir, _, _, _, instance = evaluated
    return dg.materialize(ASSETS, selection=SELECTED, instance=instance, raise_on_error=False,
                          resources={**default_resources(data_dir), "scoring_service": service},
                          run_config={"ops": ops or {}})


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.mark.slow
def test_a_failed_champion_check_leaves_deployment_alone_and_a_passing_one_promotes(evaluated):
    _, _, registry, versions, _ = evaluated
    blocked = deploy(evaluated, ScoringService(), {"champion_model": {"config": {"min_defect_recall": 0.95}}})
    checks = {c.check_name: c.passed for c in blocked.get_asset_check_evaluations()}
    assert checks[CHECK_RECALL] is False
    assert "champion_model" in materialized(blocked) and "deployed_endpoint" not in materialized(blocked)
    assert registry.production() is None  # nothing was promoted

    promoted = deploy(evaluated, ScoringService())  # no service configured: promote only
    assert promoted.success and "deployed_endpoint" in materialized(promoted)
    pointer = registry.production()
    assert pointer["version"] == versions["a"] and pointer["threshold"] == 0.4
    assert pointer["test_metrics"]["recall"] == 0.8 and pointer["run_id"] == promoted.run_id
    meta = promoted.asset_materializations_for_node("deployed_endpoint")[0].metadata
    assert meta["service_url"].value == "none configured: promoted only"


@pytest.mark.slow
def test_deployment_waits_for_the_service_and_smoke_tests_it(evaluated):
    data_dir, store, registry, versions, _ = evaluated
    settings = ServiceSettings(store=store, api_key=API_KEY, reload_seconds=0.1)
    with ServiceThread(settings) as svc:
        assert svc.app.state.service.holder.current is None  # nothing in production yet: not ready
        result = deploy(evaluated, ScoringService(url=svc.url, api_key=API_KEY))
        assert result.success
        served = svc.app.state.service.holder.current
        assert served.version == versions["a"] and served.threshold == 0.4
        calls = svc.app.state.service.batcher.stats()
    meta = {k: v.value for k, v in result.asset_materializations_for_node("deployed_endpoint")[0].metadata.items()}
    assert meta["service_url"] == svc.url and meta["model_version"] == versions["a"]
    assert meta["golden_patches"] == len(registry.card(versions["a"])["golden"]["patch_ids"]) > 10
    assert meta["max_abs_difference"] <= 1e-4 and 0 < meta["smoke_latency_ms"] < 1000
    assert calls["images"] >= meta["golden_patches"]
    out = result.output_for_node("deployed_endpoint")
    assert out["model_version"].iloc[0] == versions["a"] and out["smoke_latency_ms"].iloc[0] > 0


@pytest.mark.slow
def test_a_service_that_never_takes_the_model_fails_the_asset_with_the_reason(evaluated):
    _, _, registry, versions, _ = evaluated
    result = deploy(evaluated, ScoringService(url="http://127.0.0.1:9", api_key=API_KEY),
                    {"deployed_endpoint": {"config": {"wait_seconds": 1.0}}})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
                   and e.step_key == "deployed_endpoint")
    text = str(failure.event_specific_data.error)
    assert "did not report" in text and versions["a"] in text and API_KEY not in text
    assert registry.production()["version"] == versions["a"]  # promoted; the service will catch up


def test_scoring_service_from_env_reads_the_key_only_through_envvar(monkeypatch):
    monkeypatch.setenv("DEFECT_ASSETS_SERVICE_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("DEFECT_ASSETS_API_KEY", API_KEY)
    service = scoring_service_from_env()
    assert service.url == "http://127.0.0.1:8000" and isinstance(service.api_key, dg.EnvVar)
    assert API_KEY not in repr(service)
    monkeypatch.delenv("DEFECT_ASSETS_API_KEY")
    assert scoring_service_from_env().api_key is None
