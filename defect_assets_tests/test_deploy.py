"""The deployed_endpoint asset behind the champion's blocking checks, on evaluations really
computed by the evaluation assets (a tiny trained model as every family's candidate, its
patches and source photos stored as the upstream assets leave them): a failed gate blocks
deployment in the run and in any later run; a passing champion is promoted with its threshold
and test metrics; with a service configured, deployment waits for it and smoke-tests it over
HTTP; tampered weights fail the parity gate and deployment refuses."""

from __future__ import annotations

import io
import shutil
import zipfile

import dagster as dg
import pytest

from defect_assets.defs.deploy.resources import ScoringService, scoring_service_from_env
from defect_assets.defs.partitions import BATCHES
from defect_assets.defs.resources import default_resources
from defect_assets.pipeline.champion import EXPORT_PARITY, GROUP_FLOOR, NO_LEAK, NOT_WORSE, RECALL
from defect_assets.pipeline.family_registry import families
from defect_assets.pipeline.training import card_summary
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.formats import write_value
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.helpers.deploy import all_assets
from defect_assets_tests.helpers.serving import API_KEY, ServiceThread, model_registry

EVALUATED = [f.evaluation for f in families()] + ["evaluation_history"]
GATED = ["champion_model", "deployed_endpoint"]


@pytest.fixture(scope="module")
def evaluated_template(tmp_path_factory):
    """The tiny model registered as every family's latest model (the model assets' stored values)
    and really evaluated on the synthetic batch's test split by the evaluation assets, once per
    module, in a data folder and an on-disk Dagster instance that each test gets a copy of."""
    root = tmp_path_factory.mktemp("evaluated")
    store, registry, versions = model_registry(root / "data")
    summary = card_summary(registry.card(versions["a"]))
    for family in families():
        write_value(store, f"{family.asset}/__all__", summary)
    (root / "home").mkdir()
    instance = dg.DagsterInstance.local_temp(tempdir=str(root / "home"))
    instance.add_dynamic_partitions(BATCHES, ["synthetic"])
    result = run(root / "data", instance, EVALUATED, ScoringService())
    assert result.success
    instance.dispose()
    return root, versions


@pytest.fixture
def evaluated(evaluated_template, tmp_path, monkeypatch):
    """A private copy of the evaluated template: (data dir, store, registry, versions, instance)."""
    root, versions = evaluated_template
    shutil.copytree(root / "data", tmp_path / "data")
    shutil.copytree(root / "home", tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    instance = dg.DagsterInstance.get()
    store = LocalObjectStore(tmp_path / "data" / "artifacts")
    yield tmp_path / "data", store, ModelRegistry(store), versions, instance
    instance.dispose()


def run(data_dir, instance, selection, service: ScoringService, ops: dict | None = None):
    return dg.materialize(all_assets(), selection=selection, instance=instance, raise_on_error=False,
                          resources={**default_resources(data_dir), "scoring_service": service},
                          run_config={"ops": ops or {}})


def deploy(evaluated, service: ScoringService, ops: dict | None = None):
    data_dir, _, _, _, instance = evaluated
    return run(data_dir, instance, GATED, service, ops)


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def failure_text(result, step: str) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == step)
    return str(failure.event_specific_data.error)


@pytest.mark.slow
def test_a_failed_champion_check_leaves_deployment_alone_and_a_passing_one_promotes(evaluated):
    data_dir, _, registry, versions, instance = evaluated
    evaluation = run(data_dir, instance, ["scratch_cnn_evaluation"], ScoringService()).output_for_node(
        "scratch_cnn_evaluation").iloc[0]
    assert 0 < evaluation["test_patches"] and 0.5 < evaluation["roc_auc"] <= 1  # really computed, better than chance
    blocked = deploy(evaluated, ScoringService(), {"champion_model": {"config": {"min_defect_recall": 1.01}}})
    checks = {c.check_name: c.passed for c in blocked.get_asset_check_evaluations()}
    assert checks == {NO_LEAK: True, NOT_WORSE: True, RECALL: False, EXPORT_PARITY: True, GROUP_FLOOR: True}
    assert "champion_model" in materialized(blocked) and "deployed_endpoint" not in materialized(blocked)
    assert registry.production() is None  # nothing was promoted
    later = dg.materialize(all_assets(), selection=["deployed_endpoint"], instance=instance,
                           resources=default_resources(data_dir), raise_on_error=False)
    assert not later.success and f"champion checks failed ({RECALL})" in failure_text(later, "deployed_endpoint")

    promoted = deploy(evaluated, ScoringService())  # no service configured: promote only
    assert promoted.success and "deployed_endpoint" in materialized(promoted)
    pointer = registry.production()
    champion = promoted.output_for_node("champion_model")
    assert pointer["version"] == versions["a"] == champion.model_version
    assert pointer["threshold"] == pytest.approx(float(evaluation["threshold"]))  # chosen on validation
    assert pointer["test_metrics"]["recall"] == pytest.approx(float(evaluation["recall"]))
    assert pointer["run_id"] == promoted.run_id
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
        assert served.version == versions["a"] and served.threshold == registry.production()["threshold"]
        calls = svc.app.state.service.batcher.stats()
    meta = {k: v.value for k, v in result.asset_materializations_for_node("deployed_endpoint")[0].metadata.items()}
    assert meta["service_url"] == svc.url and meta["model_version"] == versions["a"]
    assert meta["golden_patches"] == len(registry.card(versions["a"]).golden.patch_ids) > 10
    assert meta["max_abs_difference"] <= 1e-4 and meta["smoke_latency_ms"] > 0  # a value, not a budget: bench/
    assert calls["images"] >= meta["golden_patches"]
    out = result.output_for_node("deployed_endpoint")
    assert out["model_version"].iloc[0] == versions["a"] and out["smoke_latency_ms"].iloc[0] > 0


@pytest.mark.slow
def test_a_service_that_never_takes_the_model_fails_the_asset_with_the_reason(evaluated):
    _, _, registry, versions, _ = evaluated
    result = deploy(evaluated, ScoringService(url="http://127.0.0.1:9", api_key=API_KEY),
                    {"deployed_endpoint": {"config": {"wait_seconds": 1.0}}})
    assert not result.success
    text = failure_text(result, "deployed_endpoint")
    assert "did not report" in text and versions["a"] in text and API_KEY not in text
    assert registry.production()["version"] == versions["a"]  # promoted; the service will catch up


def perturbed_keras_archive(data: bytes) -> bytes:
    """The same .keras archive with every weight nudged by 2%: a valid model, a different one."""
    import keras

    from defect_assets.ml.training import model_from_bytes, model_to_bytes

    model = model_from_bytes(data)
    model.set_weights([w * 1.02 if w.dtype.kind == "f" else w for w in model.get_weights()])
    keras.backend.clear_session(free_memory=False)
    return model_to_bytes(model)


@pytest.mark.slow
@pytest.mark.parametrize("tamper", ["bytes", "weights"])
def test_tampered_weights_fail_the_parity_check_and_deployment_refuses(evaluated, tamper):
    """'bytes': the stored file no longer matches the hash in its card. 'weights': a valid model
    with other weights whose card hash was rewritten to match (an export bug, or someone
    fixing the hash by hand): only the golden probabilities can tell."""
    import hashlib
    import json

    _, store, registry, versions, _ = evaluated
    version = versions["a"]
    key = f"models/{registry.family_of(version)}/{version}/model.keras"
    original = store.read_bytes(key)
    if tamper == "bytes":
        with zipfile.ZipFile(io.BytesIO(original)) as z:
            assert "model.weights.h5" in z.namelist()  # a real archive, its weights about to change
        store.write_bytes(key, original[:-64] + bytes(b ^ 0xFF for b in original[-64:]))
    else:
        store.write_bytes(key, perturbed_keras_archive(original))
        card_key = key.rsplit("/", 1)[0] + "/card.json"
        card = json.loads(store.read_bytes(card_key))
        card["files"]["model.keras"] = hashlib.sha256(store.read_bytes(key)).hexdigest()
        store.write_bytes(card_key, json.dumps(card).encode())

    result = deploy(evaluated, ScoringService())
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    parity = checks[EXPORT_PARITY]
    assert parity.passed is False
    if tamper == "bytes":
        assert "does not match the hash" in parity.description
    else:
        assert (parity.metadata["max_abs_difference"].value > 1e-3
                and "differs from the trained one" in parity.description)
    assert "deployed_endpoint" not in materialized(result) and registry.production() is None

    later = dg.materialize(all_assets(), selection=["deployed_endpoint"],
                           instance=evaluated[4], resources=default_resources(evaluated[0]), raise_on_error=False)
    assert not later.success and registry.production() is None
    assert EXPORT_PARITY in failure_text(later, "deployed_endpoint")


def test_scoring_service_from_env_reads_the_key_only_through_envvar(monkeypatch):
    monkeypatch.setenv("DEFECT_ASSETS_SERVICE_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("DEFECT_ASSETS_API_KEY", API_KEY)
    service = scoring_service_from_env()
    assert service.url == "http://127.0.0.1:8000" and isinstance(service.api_key, dg.EnvVar)
    assert API_KEY not in repr(service)
    monkeypatch.delenv("DEFECT_ASSETS_API_KEY")
    assert scoring_service_from_env().api_key is None
