"""Model cards and evaluation reports as typed records: every shape older code stored (one literal
card per kind, as the code of its day wrote it, and reports before and after the intervals and
latency) loads and answers attribute reads; a round trip keeps every key; a record missing a
field names it; the registry writes schema version 2 and still serves a card stored before."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from defect_assets.ml.records import CARD_SCHEMA, EvaluationReport, ModelCard, RecordError
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.registry import ModelRegistry

VALIDATION = {"accuracy": 0.8625, "balanced_accuracy": 0.8412, "log_loss": 0.3518, "roc_auc": 0.9131}
DATA = {"batches": ["b1", "b2"], "id": "3f1c9a0b7d2e", "label_versions": {"b1": "v-20261123T101010", "b2": "?"}}

# A scratch CNN card as pipeline/training.py wrote it on 2026-11-23 (08c9428): no golden set, no
# test-time views, no patch size, no schema_version.
KERAS_2026_11_23 = {
    "kind": "keras", "task": "binary", "classes": ["ok", "defect"],
    "config": {"architecture": "small_vgg", "filters": [16, 32, 64], "dropout": 0.3, "learning_rate": 0.001,
               "batch_size": 64, "epochs": 12, "seed": 0},
    "data_version": DATA, "input": {"size": 64, "channels": 1}, "validation": VALIDATION,
    "training_seconds": 141.27, "training_images_seen": 61440, "images_per_second": 434.9, "params": 288_642,
    "version": "scratch_cnn-20261123T195846123-1a2b3c4d", "family": "scratch_cnn",
    "created": "2026-11-23T19:58:46+00:00", "files": {"model.keras": "9" * 64},
}
# The same family after the golden set (9627c10), input_size / test-time views (4bff4ad) and warm starts (1ad67cc).
KERAS_2026_12_02 = {
    **KERAS_2026_11_23, "input": {"size": 64, "channels": 1, "patch_size": 96}, "inference": {"views": 4},
    "golden": {"patch_ids": ["b1-0001-p0", "b1-0002-p1"], "proba": [[0.9, 0.1], [0.2, 0.8]]},
    "warm_start_from": "scratch_cnn-20261201T101010101-0a0b0c0d",
}
# The elastic net as defs/models/assets.py registered it on 2026-11-23: features are VGG16 blocks and
# weights only (no backbone name), no golden set, no views.
LINEAR_2026_11_23 = {
    "kind": "features+linear", "task": "binary", "classes": ["ok", "defect"],
    "config": {"C": 0.1, "l1_ratio": 0.5, "task": "binary", "seed": 0}, "data_version": DATA,
    "features": {"blocks": [3, 4], "weights": "offline"}, "input": {"size": 96, "channels": 1},
    "validation": VALIDATION, "training_seconds": 3.5,
    "trials": [{"trial": 1, "C": 0.1, "l1_ratio": 0.5, "val_accuracy": 0.86, "val_roc_auc": 0.91},
               {"trial": 2, "C": 1.0, "l1_ratio": 0.5, "val_accuracy": 0.84, "val_roc_auc": 0.90}],
    "nonzero_features": 412,
    "version": "elastic_net-20261123T200102003-5e6f7a8b", "family": "elastic_net",
    "created": "2026-11-23T20:01:02+00:00", "files": {"linear.npz": "a" * 64},
}
# Today's elastic net: an EfficientNet-Lite0 feature spec, views and the golden set.
LINEAR_2026_12_03 = {
    **LINEAR_2026_11_23, "features": {"backbone": "lite0", "stages": ["3", "5"], "runtime": "onnxruntime"},
    "inference": {"views": 8}, "golden": {"patch_ids": ["b1-0001-p0"], "proba": [[0.75, 0.25]]},
}
# The ensemble as pipeline/families.py registered it (7825675, weights unrounded since 5ff0261).
ENSEMBLE_2026_11_26 = {
    "kind": "ensemble", "task": "binary", "classes": ["ok", "defect"], "input": {"size": 96, "channels": 1},
    "members": [LINEAR_2026_11_23["version"], KERAS_2026_11_23["version"]], "weights": [0.75, 0.25],
    "config": {"metric": "roc_auc", "weight_steps": 4}, "data_version": DATA, "validation": VALIDATION,
    "training_seconds": 12.0,
    "trials": [{"weights": [0.5, 0.5], "val_roc_auc": 0.91, "chosen": False},
               {"weights": [0.75, 0.25], "val_roc_auc": 0.92, "chosen": True}],
    "golden": {"patch_ids": ["b1-0001-p0"], "proba": [[0.6, 0.4]]},
    "version": "ensemble-20261126T120000000-9f8e7d6c", "family": "ensemble",
    "created": "2026-11-26T12:00:00+00:00", "files": {"members.json": "b" * 64},
}
OLD_CARDS = {"keras 2026-11-23": KERAS_2026_11_23, "keras 2026-12-02": KERAS_2026_12_02,
             "features+linear 2026-11-23": LINEAR_2026_11_23, "features+linear 2026-12-03": LINEAR_2026_12_03,
             "ensemble 2026-11-26": ENSEMBLE_2026_11_26}


@pytest.mark.parametrize("name", OLD_CARDS)
def test_a_card_stored_by_older_code_loads_as_version_1_and_round_trips_every_key(name):
    stored = json.loads(json.dumps(OLD_CARDS[name], indent=2, sort_keys=True))  # as read from card.json
    card = ModelCard.from_dict(stored)
    assert card.schema_version == 1
    assert card.version == stored["version"] and card.family == stored["family"] and card.kind == stored["kind"]
    assert card.classes == ["ok", "defect"] and card.task == "binary"
    assert card.input.size == stored["input"]["size"] and card.input.channels == 1
    assert card.validation.roc_auc == 0.9131 and card.validation.get("log_loss") == 0.3518
    assert card.data_version.batches == ["b1", "b2"] and card.data_version.label_versions["b2"] == "?"
    assert card.training_seconds == stored["training_seconds"] and card.files == stored["files"]
    assert card.inference.views == stored.get("inference", {}).get("views", 1)
    assert (card.golden is None) == ("golden" not in stored)
    assert card.to_dict() == {**stored, "schema_version": 1}  # nothing lost, nothing invented
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card


def test_family_specific_fields_are_typed():
    keras = ModelCard.from_dict(KERAS_2026_12_02)
    assert (keras.params, keras.images_per_second, keras.training_images_seen) == (288_642, 434.9, 61440)
    assert keras.input.patch_size == 96 and keras.warm_start_from.startswith("scratch_cnn-")
    assert keras.golden.patch_ids == ["b1-0001-p0", "b1-0002-p1"] and keras.golden.proba[1] == [0.2, 0.8]
    assert ModelCard.from_dict(KERAS_2026_11_23).input.patch_size is None

    old_linear = ModelCard.from_dict(LINEAR_2026_11_23)
    assert old_linear.features.backbone == "vgg16" and old_linear.features.blocks == [3, 4]
    assert old_linear.features.to_dict() == {"blocks": [3, 4], "weights": "offline"}  # what make_extractor read
    assert old_linear.nonzero_features == 412 and [t["C"] for t in old_linear.trials] == [0.1, 1.0]
    lite = ModelCard.from_dict(LINEAR_2026_12_03)
    assert (lite.features.backbone, lite.features.stages, lite.features.runtime) == ("lite0", ["3", "5"],
                                                                                    "onnxruntime")
    ensemble = ModelCard.from_dict(ENSEMBLE_2026_11_26)
    assert ensemble.members == ENSEMBLE_2026_11_26["members"] and ensemble.weights == [0.75, 0.25]
    assert ensemble.features is None and ensemble.params is None


def test_unknown_keys_are_kept_and_readable():
    doc = {**KERAS_2026_12_02, "schema_version": 2, "calibration": {"method": "temperature", "t": 1.3}}
    card = ModelCard.from_dict(doc)
    assert card.calibration == {"method": "temperature", "t": 1.3}
    assert card.to_dict() == doc


@pytest.mark.parametrize(("drop", "named"), [("classes", "'classes'"), ("kind", "'kind'"), ("version", "'version'")])
def test_a_card_missing_a_required_field_names_it(drop, named):
    doc = {k: v for k, v in KERAS_2026_11_23.items() if k != drop}
    with pytest.raises(RecordError, match=f"missing field {named}"):
        ModelCard.from_dict(doc)


def test_a_malformed_nested_field_is_named_with_its_path():
    doc = copy.deepcopy(KERAS_2026_11_23)
    del doc["input"]["channels"]
    doc["validation"]["roc_auc"] = "high"
    with pytest.raises(RecordError) as e:
        ModelCard.from_dict(doc)
    assert "model card scratch_cnn-20261123T195846123-1a2b3c4d" in str(e.value)
    assert "missing field 'input.channels'" in str(e.value) and "field 'validation.roc_auc'" in str(e.value)


def test_a_card_from_newer_code_is_refused_with_its_version():
    with pytest.raises(RecordError, match="schema version 3"):
        ModelCard.from_dict({**KERAS_2026_11_23, "schema_version": 3})


def _old_store_with(tmp_path, card: dict, files: dict[str, bytes]) -> ModelRegistry:
    """A registry folder as the code before records wrote it: artifact files and a card.json."""
    store = LocalObjectStore(tmp_path)
    prefix = f"models/{card['family']}/{card['version']}"
    for name, data in files.items():
        store.write_bytes(f"{prefix}/{name}", data)
    doc = {**card, "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
    store.write_bytes(f"{prefix}/card.json", json.dumps(doc, indent=2, sort_keys=True).encode())
    return ModelRegistry(store)


def test_the_registry_serves_a_card_stored_before_and_its_model_scores(tmp_path):
    from defect_assets.ml.cnn import make_scratch_cnn
    from defect_assets.ml.scorer import load_registered
    from defect_assets.ml.training import model_to_bytes, seed_everything

    seed_everything(3)
    keras_bytes = model_to_bytes(make_scratch_cnn((32, 32, 1), 2, "small_vgg", filters=(4, 8), dropout=0.0))
    old = {**KERAS_2026_11_23, "input": {"size": 32, "channels": 1}}
    registry = _old_store_with(tmp_path, old, {"model.keras": keras_bytes})
    card = registry.card(old["version"])
    assert card.schema_version == 1 and card.version == old["version"]
    assert registry.latest("scratch_cnn") == card and registry.versions() == [card]
    assert registry.read_file(old["version"], "model.keras") == keras_bytes  # hash checked against card.files
    scorer = load_registered(registry, old["version"])
    assert scorer.views == 1 and scorer.input_shape == (32, 32) and scorer.classes == ["ok", "defect"]
    p = scorer.predict_proba(np.zeros((3, 32, 32), np.uint8))
    assert p.shape == (3, 2) and np.allclose(p.sum(axis=1), 1, atol=1e-5)


def test_register_writes_the_same_keys_with_schema_version_2(tmp_path):
    registry = ModelRegistry(LocalObjectStore(tmp_path))
    fields = {k: v for k, v in KERAS_2026_12_02.items() if k not in ("version", "family", "created", "files")}
    card = registry.register("scratch_cnn", {"model.keras": b"weights"}, fields)
    stored = json.loads(registry.store.read_bytes(f"models/scratch_cnn/{card.version}/card.json"))
    assert stored == {**fields, "version": card.version, "family": "scratch_cnn", "created": card.created,
                      "files": {"model.keras": hashlib.sha256(b"weights").hexdigest()}, "schema_version": CARD_SCHEMA}
    assert registry.card(card.version) == card and card.schema_version == 2
    again = registry.register("scratch_cnn", {"model.keras": b"other"}, registry.card(card.version))  # a ModelCard
    assert registry.card(again.version).config == fields["config"] and again.version != card.version


def test_register_refuses_a_card_missing_a_field_before_writing_anything(tmp_path):
    registry = ModelRegistry(LocalObjectStore(tmp_path))
    fields = {k: v for k, v in KERAS_2026_11_23.items() if k not in ("version", "family", "created", "files",
                                                                        "input")}
    with pytest.raises(RecordError, match="missing field 'input'"):
        registry.register("scratch_cnn", {"model.keras": b"weights"}, fields)
    assert list(registry.store.list("models/")) == []


# --- evaluation reports ---

CURVE = {"x": [0.0, 0.1, 1.0], "y": [0.0, 0.8, 1.0]}
# A binary report as pipeline/evaluate.py wrote it on 2026-11-23 (9627c10): no baseline, intervals or latency.
BINARY_2026_11_23 = {
    "task": "binary", "threshold": 0.4213, "n": 120, "positives": 30, "accuracy": 0.875, "balanced_accuracy": 0.85,
    "precision": 0.75, "recall": 0.8, "f1": 0.7742, "roc_auc": 0.93, "pr_auc": 0.81,
    "confusion_matrix": [[81, 9], [6, 24]], "roc_curve": CURVE, "pr_curve": CURVE,
    "evaluation_id": "eval-20261123T210000000-0f0e0d0c", "evaluated_at": "2026-11-23T21:00:00+00:00",
    "model_version": KERAS_2026_11_23["version"], "model_family": "scratch_cnn", "classes": ["ok", "defect"],
    "data_version": DATA, "trained_on": DATA, "threshold_method": "max_f1", "validation_at_training": VALIDATION,
    "report_json": "evaluations/scratch_cnn/eval-20261123T210000000-0f0e0d0c/report.json",
    "report_html": "evaluations/scratch_cnn/eval-20261123T210000000-0f0e0d0c/report.html",
}
BINARY_2026_12_03 = {**BINARY_2026_11_23, "majority_baseline": 0.75, "accuracy_ci": [0.8167, 0.925],
                     "roc_auc_ci": [0.88, 0.97], "latency_p50_ms": 11.2, "latency_p99_ms": 19.8, "latency_runs": 200}
MULTICLASS_2026_12_03 = {
    "majority_baseline": 0.5, "accuracy_ci": [0.7, 0.85], "roc_auc_ci": [0.8, 0.95], "task": "multiclass",
    "classes": ["background", "dent", "scratch"], "n": 60, "accuracy": 0.78, "balanced_accuracy": 0.74,
    "precision": 0.75, "recall": 0.74, "f1": 0.745, "roc_auc": float("nan"),
    "per_class": [{"class": c, "precision": 0.75, "recall": 0.74, "f1": 0.745, "support": 20, "roc_auc_ovr": a}
                  for c, a in (("background", 0.9), ("dent", 0.85), ("scratch", float("nan")))],
    "ovr_roc_curves": {"background": CURVE, "dent": CURVE},
    "confusion_matrix": [[18, 1, 1], [3, 15, 2], [2, 4, 14]],
    **{k: BINARY_2026_11_23[k] for k in ("evaluation_id", "evaluated_at", "model_version", "model_family",
                                         "data_version", "trained_on", "validation_at_training", "report_json",
                                         "report_html")},
    "threshold_method": "argmax", "latency_p50_ms": float("nan"), "latency_p99_ms": float("nan"), "latency_runs": 0,
}


def _same(a: dict, b: dict) -> bool:
    """Equal as JSON (NaN equal to NaN, as a reader of report.json sees them)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("doc", [BINARY_2026_11_23, BINARY_2026_12_03, MULTICLASS_2026_12_03],
                         ids=["binary-2026-11-23", "binary-2026-12-03", "multiclass-2026-12-03"])
def test_a_stored_report_loads_and_round_trips_every_key(doc):
    stored = json.loads(json.dumps(doc, indent=2))
    report = EvaluationReport.from_dict(stored)
    assert report.schema_version == 1 and report.model_family == "scratch_cnn" and report.n == stored["n"]
    assert report.confusion_matrix == stored["confusion_matrix"] and report.trained_on.id == DATA["id"]
    assert report.validation_at_training.roc_auc == 0.9131
    assert _same(report.to_dict(), {**stored, "schema_version": 1})
    assert _same(EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict()))).to_dict(), report.to_dict())


def test_report_fields_by_task():
    old = EvaluationReport.from_dict(BINARY_2026_11_23)
    assert old.binary and old.threshold == 0.4213 and old.positives == 30 and old.roc_curve.y == [0.0, 0.8, 1.0]
    assert old.majority_baseline is None and old.accuracy_ci is None and old.latency_runs is None
    multi = EvaluationReport.from_dict(MULTICLASS_2026_12_03)
    assert not multi.binary and multi.threshold is None and multi.positives is None
    assert [c.class_name for c in multi.per_class] == ["background", "dent", "scratch"]
    assert multi.per_class[0].to_dict()["class"] == "background"  # the stored key, not the attribute name
    assert sorted(multi.ovr_roc_curves) == ["background", "dent"]


def test_a_report_missing_a_field_names_it():
    doc = {k: v for k, v in BINARY_2026_12_03.items() if k != "confusion_matrix"}
    with pytest.raises(RecordError, match="evaluation report eval-20261123T210000000-0f0e0d0c: missing field "
                                          "'confusion_matrix'"):
        EvaluationReport.from_dict(doc)


def test_history_row_of_a_report_is_the_stored_figures():
    from defect_assets.pipeline.evaluate import HISTORY_COLUMNS, history_row

    row = history_row(EvaluationReport.from_dict(BINARY_2026_12_03))
    assert list(row) == HISTORY_COLUMNS
    assert (row["tn"], row["fp"], row["fn"], row["tp"]) == (81, 9, 6, 24)
    assert (row["test_defects"], row["threshold"], row["latency_p99_ms"]) == (30, 0.4213, 19.8)
    assert row["data_version"] == DATA["id"] and row["batches"] == "b1,b2"
    multi = history_row(EvaluationReport.from_dict(MULTICLASS_2026_12_03))
    assert np.isnan(multi["threshold"]) and np.isnan(multi["test_defects"]) and np.isnan(multi["pr_auc"])


def test_the_dashboard_shows_a_report_stored_before_the_intervals(tmp_path):
    from defect_assets.serving.dashboard import _report

    store = LocalObjectStore(tmp_path)
    store.write_bytes(BINARY_2026_11_23["report_json"], json.dumps(BINARY_2026_11_23, indent=2).encode())
    history = pd.DataFrame([{"evaluation_id": BINARY_2026_11_23["evaluation_id"],
                             "report_json": BINARY_2026_11_23["report_json"]}])
    entry = {"model_version": BINARY_2026_11_23["model_version"], "family": "scratch_cnn",
             "evaluation_id": BINARY_2026_11_23["evaluation_id"], "threshold": 0.4213}
    shown = _report(store, history, entry)
    assert shown["test_patches"] == 120 and shown["positives"] == 30 and shown["majority_baseline"] == 0.75
    assert shown["roc_curves"] == {"defect vs ok": CURVE} and shown["confusion_matrix"] == [[81, 9], [6, 24]]
    assert shown["accuracy_low"] < 0.875 < shown["accuracy_high"]
