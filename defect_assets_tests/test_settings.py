"""The settings classes read the environment the way the old hand-written readers did (booleans'
spellings, blanks, ``_`` in numbers, floors), refuse a wrong value with an error naming its
variable, keep secrets out of every repr and error, and see a variable set after import."""

from __future__ import annotations

import os

import pytest

from defect_assets.ml.settings import MlSettings
from defect_assets.pipeline.settings import PipelineSettings
from defect_assets.serving.settings import ClientSettings, ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.settings import InvalidSetting, StorageSettings

TOKEN_A = "token-of-ann-0001"
TOKEN_B = "token-of-bob-0002"


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "artifacts")


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("Yes", True), (" ON ", True), ("TRUE", True),
                                        ("0", False), ("false", False), ("no", False), ("Off", False),
                                        (" 0 ", False)])
def test_yes_no_values_are_the_spellings_env_flag_accepted(store, raw, value):
    s = ServiceSettings.from_env(store, {"DEFECT_ASSETS_PREDICTION_LOG": raw,
                                         "DEFECT_ASSETS_DASHBOARD_REQUIRES_KEY": raw})
    assert (s.prediction_log, s.dashboard_requires_key) == (value, value)
    assert StorageSettings.load({"DEFECT_ASSETS_AZURE_CREATE_CONTAINERS": raw}).azure_create_containers is value


@pytest.mark.parametrize("raw", ["t", "f", "y", "n", "2", "maybe"])
def test_other_yes_no_spellings_are_refused_naming_the_variable(store, raw):
    """pydantic alone would take t/f/y/n; the old reader did not, and neither does this one."""
    with pytest.raises(InvalidSetting, match=r"^DEFECT_ASSETS_PREDICT_REQUIRES_KEY: .* is not a yes/no value"):
        ServiceSettings.from_env(store, {"DEFECT_ASSETS_PREDICT_REQUIRES_KEY": raw})


def test_unset_empty_or_blank_means_the_default(store):
    blank = {var: "  " for var in ("DEFECT_ASSETS_MAX_BATCH", "DEFECT_ASSETS_PREDICTION_LOG", "DEFECT_ASSETS_API_KEY",
                                   "DEFECT_ASSETS_LABELER_TOKENS", "DEFECT_ASSETS_MARK_CLASSES")}
    for env in ({}, {k: "" for k in blank}, blank):
        s = ServiceSettings.from_env(store, env)
        assert (s.max_batch, s.prediction_log, s.api_key, s.labelers) == (16, True, None, ())
        assert s.mark_classes == ("defect", "dent", "scratch")
        assert not s.protects("predict")
    p = PipelineSettings.load({"DEFECT_ASSETS_NIGHTLY_CRON": "", "DEFECT_ASSETS_TRAINING_BACKEND": " "})
    assert (p.nightly_cron, p.training_backend, p.timezone) == ("0 2 * * *", "subprocess", "UTC")


def test_numbers_take_underscores_and_keep_their_units_and_floors(store):
    env = {"DEFECT_ASSETS_MAX_UPLOAD_BYTES": "1_000_000", "DEFECT_ASSETS_MAX_WAIT_MS": "7.5",
           "DEFECT_ASSETS_HEAVY_DEADLINE_SECONDS": "0"}
    s = ServiceSettings.from_env(store, env)
    assert (s.max_upload_bytes, s.max_wait_ms, s.heavy_deadline_seconds) == (1_000_000, 7.5, 0.0)
    assert isinstance(s.max_upload_bytes, int) and isinstance(s.max_wait_ms, float)
    # the sensors' and Pipes' old floors: a smaller value is raised to it, not refused
    p = PipelineSettings.load({"DEFECT_ASSETS_LANDING_SENSOR_INTERVAL_SECONDS": "0",
                               "DEFECT_ASSETS_RETRAIN_MIN_INTERVAL_MINUTES": "-5",
                               "AZUREML_POLL_SECONDS": "0.01", "DEFECT_ASSETS_PIPES_MESSAGE_INTERVAL": "0"})
    assert (p.landing_sensor_interval_seconds, p.retrain_min_interval_minutes) == (1, 0.0)
    assert (p.azureml_poll_seconds, p.pipes_message_interval) == (0.1, 0.2)
    assert PipelineSettings.load({}).retrain_sensor_interval_seconds == 60


@pytest.mark.parametrize("env, variable, says", [
    ({"DEFECT_ASSETS_MAX_BATCH": "abc"}, "DEFECT_ASSETS_MAX_BATCH", "'abc' is not a whole number"),
    ({"DEFECT_ASSETS_MAX_BATCH": "1.5"}, "DEFECT_ASSETS_MAX_BATCH", "'1.5' is not a whole number"),
    ({"DEFECT_ASSETS_MAX_BATCH": "0"}, "DEFECT_ASSETS_MAX_BATCH", "greater than or equal to 1 (got 0)"),
    ({"DEFECT_ASSETS_MAX_WORK_GMAC": "lots"}, "DEFECT_ASSETS_MAX_WORK_GMAC", "'lots' is not a number"),
    ({"DEFECT_ASSETS_RELOAD_SECONDS": "0"}, "DEFECT_ASSETS_RELOAD_SECONDS", "greater than 0"),
    ({"DEFECT_ASSETS_MARK_CLASSES": "dent,a b"}, "DEFECT_ASSETS_MARK_CLASSES", "class names are letters"),
    ({"DEFECT_ASSETS_LABELER_TOKENS": "ann"}, "DEFECT_ASSETS_LABELER_TOKENS", "entry 1 is not name:token"),
])
def test_a_wrong_service_value_names_its_variable(store, env, variable, says):
    with pytest.raises(InvalidSetting) as err:
        ServiceSettings.from_env(store, env)
    assert str(err.value).startswith(variable) and says in str(err.value)


def test_a_wrong_value_from_the_process_environment_names_its_variable(store, monkeypatch):
    monkeypatch.setenv("DEFECT_ASSETS_MAX_BATCH", "abc")
    with pytest.raises(ValueError, match=r"^DEFECT_ASSETS_MAX_BATCH: 'abc' is not a whole number$"):
        ServiceSettings.from_env(store)
    monkeypatch.setenv("DEFECT_ASSETS_RETRAIN_SENSOR_INTERVAL_SECONDS", "soon")
    with pytest.raises(ValueError, match="DEFECT_ASSETS_RETRAIN_SENSOR_INTERVAL_SECONDS: 'soon' is not a whole "
                                         "number of seconds"):
        PipelineSettings.load()
    monkeypatch.setenv("DEFECT_ASSETS_ONNX_THREADS", "many")
    with pytest.raises(ValueError, match="DEFECT_ASSETS_ONNX_THREADS"):
        MlSettings.load()


def test_a_short_or_shared_labeler_token_is_refused_without_showing_it(store):
    short = "ann:shorttoken"  # 10 characters
    with pytest.raises(InvalidSetting) as err:
        ServiceSettings.from_env(store, {"DEFECT_ASSETS_LABELER_TOKENS": f"{short},bob:{TOKEN_B}"})
    assert str(err.value) == "DEFECT_ASSETS_LABELER_TOKENS: the token of ann is shorter than 12 characters"
    with pytest.raises(InvalidSetting) as err:
        ServiceSettings.from_env(store, {"DEFECT_ASSETS_LABELER_TOKENS": f"ann:{TOKEN_A},bob:{TOKEN_A}"})
    assert "share a token" in str(err.value) and TOKEN_A not in str(err.value)
    assert "shorttoken" not in repr(err.value) and err.value.__cause__ is None and err.value.__suppress_context__


def test_secrets_stay_out_of_repr_and_are_compared_whole(store):
    key = "the-service-key-123"
    s = ServiceSettings.from_env(store, {"DEFECT_ASSETS_API_KEY": key,
                                         "DEFECT_ASSETS_LABELER_TOKENS": f"ann:{TOKEN_A}, bob:{TOKEN_B}"})
    for text in (repr(s), str(s), repr(s.with_(max_batch=8)), repr(s.labelers)):
        assert key not in text and TOKEN_A not in text and TOKEN_B not in text
    assert s.key_matches(key) and not s.key_matches(key[:-1]) and not s.key_matches(None)
    assert (s.labeler_for(TOKEN_B), s.labeler_for(TOKEN_A[:-1]), s.labeler_for(None)) == ("bob", None, None)
    storage = StorageSettings.load({"AZURE_STORAGE_KEY": "a2V5LXZhbHVl", "AZURE_STORAGE_SAS_TOKEN": "sv=1&sig=abc"})
    assert "a2V5LXZhbHVl" not in repr(storage) and "sig=abc" not in repr(storage)
    assert storage.azure_storage_key.get_secret_value() == "a2V5LXZhbHVl"
    client = ClientSettings.load({"DEFECT_ASSETS_API_KEY": key, "DEFECT_ASSETS_SERVICE_URL": " http://10.0.0.5:8000 "})
    assert client.service_url == "http://10.0.0.5:8000" and key not in repr(client)


def test_explicit_values_win_and_a_copy_does_not_read_the_environment_again(store, monkeypatch):
    monkeypatch.setenv("DEFECT_ASSETS_MAX_BATCH", "4")
    monkeypatch.setenv("DEFECT_ASSETS_API_KEY", "from-the-environment")
    s = ServiceSettings(store, max_batch=32)
    assert s.max_batch == 32 and s.api_key.get_secret_value() == "from-the-environment"
    monkeypatch.setenv("DEFECT_ASSETS_MAX_BATCH", "8")
    copy = s.with_(reload_seconds=0.2)
    assert (copy.max_batch, copy.reload_seconds, copy.store) == (32, 0.2, store)
    with pytest.raises(InvalidSetting, match="DEFECT_ASSETS_MAX_IMAGES"):
        s.with_(max_images=0)
    # an explicit mapping is all that is read
    assert ServiceSettings.from_env(store, {}).max_batch == 16


def test_a_variable_set_after_import_is_seen(monkeypatch):
    """Nothing is cached: tests (and a CLI that sets DEFECT_ASSETS_DATA_DIR) see a change at once."""
    from defect_assets.defs.automation import sensors
    from defect_assets.pipeline import engine
    from defect_assets.storage.env import store_config

    monkeypatch.setenv("DEFECT_ASSETS_DASK_ADDRESS", " tcp://10.0.0.9:8786 ")
    monkeypatch.setenv("DEFECT_ASSETS_RETRAIN_MIN_INTERVAL_MINUTES", "2_5")
    monkeypatch.setenv("DEFECT_ASSETS_DATA_DIR", "/srv/defects")
    monkeypatch.delenv("DEFECT_ASSETS_STORAGE", raising=False)
    assert engine.dask_address() == "tcp://10.0.0.9:8786"
    assert sensors.min_interval_minutes() == 25.0
    assert store_config("landing").root == "/srv/defects/landing"
    monkeypatch.setenv("DEFECT_ASSETS_DASK_ADDRESS", "")
    assert engine.dask_address() == ""


def test_storage_settings_choose_the_store_as_before(tmp_path):
    from defect_assets.storage.env import azure_credential_env, store_config

    env = {"DEFECT_ASSETS_STORAGE": " Azure ", "DEFECT_ASSETS_AZURE_ACCOUNT_URL": "https://acct.blob.core.windows.net",
           "DEFECT_ASSETS_AZURE_ARTIFACT_PREFIX": "team-a", "DEFECT_ASSETS_AZURE_CREATE_CONTAINERS": "no",
           "AZURE_STORAGE_SAS_TOKEN": "sv=2024&sig=xyz"}
    config = store_config("artifacts", environ=env)
    assert (config.kind, config.container, config.prefix, config.create_container) == ("azure", "artifacts", "team-a",
                                                                                        False)
    assert (config.credential_kind, config.credential_env) == ("sas", "AZURE_STORAGE_SAS_TOKEN")
    assert "xyz" not in repr(config)
    assert azure_credential_env({**env, "AZURE_STORAGE_KEY": "k"}) == ("key", "AZURE_STORAGE_KEY")
    assert azure_credential_env({}) == ("default", None)
    assert store_config("landing", tmp_path, environ=env).root == str(tmp_path / "landing")  # explicit folder: local
    with pytest.raises(InvalidSetting, match="DEFECT_ASSETS_STORAGE: 's3': use 'local' or 'azure'"):
        store_config("landing", environ={"DEFECT_ASSETS_STORAGE": "s3"})


def test_one_field_is_read_and_validated_without_the_required_rest(monkeypatch):
    """The main job reads the service's Dagster UI address without a store (which the service class
    requires), validated as the class would, and hands it on to the service's environment."""
    monkeypatch.setenv("DEFECT_ASSETS_DAGSTER_UI_URL", "  http://127.0.0.1:3001  ")
    assert ServiceSettings.field_value("dagster_ui_url") == "http://127.0.0.1:3001"
    assert ServiceSettings.field_value("max_pixels", {}) == 25_000_000  # unset: the default
    assert ServiceSettings.field_value("max_pixels", {"DEFECT_ASSETS_MAX_PIXELS": "1_000"}) == 1000
    with pytest.raises(InvalidSetting, match="DEFECT_ASSETS_MAX_PIXELS"):
        ServiceSettings.field_value("max_pixels", {"DEFECT_ASSETS_MAX_PIXELS": "0"})
    child = ServiceSettings.environ_with(dagster_ui_url="http://127.0.0.1:3002")
    assert child["DEFECT_ASSETS_DAGSTER_UI_URL"] == "http://127.0.0.1:3002"
    assert child["PATH"] == os.environ["PATH"]
