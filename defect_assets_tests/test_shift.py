"""Issue 25: input drift on backbone features (a domain classifier with a permutation level) and
per-group metrics."""

import math

import numpy as np
import pytest

from defect_assets.ml.drift import domain_classifier_drift


def smooth_images(rng, n, size=32):
    """Kind A: soft gray blobs (low frequencies)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        fx, fy, ph = rng.uniform(0.5, 1.5, 3)
        img = 128 + 40 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph * 6) + rng.normal(0, 3, (size, size))
        out.append(img)
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def striped_images(rng, n, size=32):
    """Kind B: high-contrast thin stripes and speckle (high frequencies)."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        period = rng.integers(3, 6)
        img = np.where(((xx + rng.integers(0, 5)) // period) % 2 == 0, 220, 30) + rng.normal(0, 25, (size, size))
        out.append(img)
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def feature_sets():
    from defect_assets.pipeline.features import backbone_features

    rng = np.random.default_rng(0)
    spec = {"backbone": "lite0", "stages": ["4", "top"], "runtime": "onnxruntime"}
    train = backbone_features(smooth_images(rng, 60), spec)
    same = backbone_features(smooth_images(rng, 30), spec)
    other = backbone_features(striped_images(rng, 30), spec)
    return train, same, other


@pytest.mark.slow  # backbone features of 120 images and 2 x 31 cross-validations: minutes on a loaded machine
def test_a_batch_of_the_other_kind_drifts_and_one_of_the_same_kind_does_not(feature_sets):
    train, same, other = feature_sets
    drifted = domain_classifier_drift(train, other, permutations=30)
    assert drifted.auc > 0.95 and drifted.auc > drifted.null_auc_95
    assert drifted.p_value == pytest.approx(1 / 31)  # no permutation reached it
    assert drifted.differs()
    calm = domain_classifier_drift(train, same, permutations=30)
    assert calm.auc < calm.null_auc_95 + 0.1 and calm.p_value > 0.05
    assert not calm.differs()
    assert len(drifted.current_scores) == 30 and len(drifted.least_like_training) == 12
    worst = drifted.least_like_training[0]
    assert drifted.current_scores[worst] == max(drifted.current_scores)


def test_domain_drift_refuses_too_few_images():
    with pytest.raises(ValueError, match="at least 2"):
        domain_classifier_drift(np.zeros((1, 4)), np.ones((5, 4)))


def test_group_metrics_are_exact_on_a_hand_made_case():
    from defect_assets.ml.groups import below_floor, group_metrics

    # group "a": 4 items, 2 defects; scores rank them perfectly and threshold 0.5 gets all right
    # group "b": 5 items, 1 defect, which is missed (0.4 < 0.5), one false alarm (0.6)
    y = [1, 1, 0, 0, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.2, 0.1, 0.4, 0.6, 0.3, 0.2, 0.1]
    g = ["a", "a", "a", "a", "b", "b", "b", "b", "b"]
    a, b = group_metrics(y, s, 0.5, g, "cell_type")
    assert (a["group"], a["n"], a["positives"], a["accuracy"], a["recall"], a["roc_auc"]) == ("a", 4, 2, 1.0, 1.0, 1.0)
    assert a["majority_baseline"] == 0.5 and a["grouping"] == "cell_type"
    assert (b["group"], b["n"], b["positives"]) == ("b", 5, 1)
    assert b["accuracy"] == pytest.approx(3 / 5) and b["recall"] == 0.0
    assert b["roc_auc"] == pytest.approx(3 / 4)  # the defect (0.4) outranks 3 of the 4 negatives (not 0.6)
    assert b["majority_baseline"] == pytest.approx(4 / 5)
    lo, hi = b["recall_ci"]
    z2 = 1.959963984540054 ** 2
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(z2 / (1 + z2))  # Wilson, 0 of 1
    assert a["accuracy_ci"] == [1.0, 1.0]
    assert [x["group"] for x in below_floor([a, b], "roc_auc", 0.8)] == ["b"]
    assert math.isnan(group_metrics([0, 0], [0.1, 0.2], 0.5, ["x", "x"], "batch")[0]["roc_auc"])


def test_history_gets_one_long_format_row_per_group(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from defect_assets.ml.groups import group_metrics
    from defect_assets.pipeline.evaluate import HISTORY_COLUMNS, HISTORY_CSV, append_history, group_history_rows
    from defect_assets.storage import LocalObjectStore

    store = LocalObjectStore(tmp_path)
    overall = {c: ("eval-1" if c == "evaluation_id" else 0.5 if c in ("accuracy", "roc_auc") else "x")
               for c in HISTORY_COLUMNS}
    overall.update(grouping="", group="")
    groups = group_metrics([1, 0, 1, 0, 0], [0.9, 0.1, 0.3, 0.2, 0.7], 0.5, ["mono", "mono", "poly", "poly", "poly"],
                           "cell_type")
    report = SimpleNamespace(groups=groups, report_json="r.json", report_html="r.html")
    rows = [overall, *group_history_rows(overall, report)]
    assert len(append_history(store, rows)) == 3
    hist = pd.read_csv(tmp_path / HISTORY_CSV)
    assert list(hist.columns) == HISTORY_COLUMNS and list(hist["evaluation_id"]) == ["eval-1"] * 3
    per_group = hist[hist["grouping"] == "cell_type"].set_index("group")
    assert float(per_group.loc["mono", "accuracy"]) == 1.0
    assert float(per_group.loc["poly", "accuracy"]) == pytest.approx(1 / 3)
    assert int(per_group.loc["poly", "test_patches"]) == 3
    assert float(per_group.loc["poly", "majority_baseline"]) == pytest.approx(2 / 3)
    assert per_group.loc["mono", "model_version"] == "x"  # the overall row's identity is repeated
    assert group_history_rows(overall, None) == []  # a report with no groups (or none stored) adds nothing


def test_the_dashboard_says_a_differing_batch_is_held_back_and_what_to_do(tmp_path):
    from defect_assets.pipeline.shift import BatchDrift
    from defect_assets.serving import dashboard
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.formats import write_value

    store = LocalObjectStore(tmp_path)
    write_value(store, dashboard.asset_value_prefix("batch_drift", "odd"),
                BatchDrift({"differs": True, "domain_auc": 0.97, "p_value": 0.02,
                            "reason": "domain AUC 0.970 >= 0.75: label some of its images"}))
    write_value(store, dashboard.asset_value_prefix("batch_drift", "b1"),
                BatchDrift({"differs": False, "domain_auc": 0.52, "p_value": 0.6, "reason": "like training"}))
    odd, b1 = dashboard._drift_of(store, "odd"), dashboard._drift_of(store, "b1")
    assert odd["drift_auc"] == 0.97 and odd["drift"].startswith("held back") and "label some" in odd["drift"]
    assert (b1["drift_auc"], b1["drift"]) == (0.52, "like training")
    assert dashboard._drift_of(store, "none")["drift"].startswith("not measured")


def test_the_batch_drift_asset_warns_and_stores_its_document(tmp_path):
    import dagster as dg
    import pandas as pd

    from defect_assets.defs.monitoring.drift import BATCH_LIKE_TRAINING, batch_drift
    from defect_assets.defs.resources import default_resources
    from defect_assets.storage.formats import ArrayTable, write_value
    from defect_assets.storage.layout import asset_value_prefix

    rng = np.random.default_rng(1)
    resources = default_resources(tmp_path / "data")
    store = resources["artifact_store"].open()

    def features(n, shift):
        table = pd.DataFrame({"patch_id": [f"p{i}" for i in range(n)], "image_id": "i", "label": "ok",
                              "is_defect": False, "split": "train"})
        return ArrayTable(table, {"features": rng.normal(shift, 1, (n, 16)).astype(np.float32)}, {})

    write_value(store, asset_value_prefix("backbone_features", "b1"), features(40, 0.0))
    odd = features(20, 3.0)
    patches = ArrayTable(odd.table, {"context": rng.integers(0, 255, (20, 8, 8), dtype=np.uint8)}, {"size": 8})
    ctx = dg.build_asset_context(partition_key="odd")
    out = list(batch_drift(context=ctx, backbone_features=odd, labeled_patches=patches,
                           artifact_store=resources["artifact_store"]))
    value, check = out[0].value, out[1]
    assert value.doc["differs"] and value.doc["domain_auc"] > 0.95 and value.doc["reference_n"] == 40
    assert check.check_name == BATCH_LIKE_TRAINING and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN and "label some of its images" in check.description
    assert len(value.doc["least_like_training"]) == 12 and "least_like_training" in out[0].metadata


def test_the_per_group_floor_gate_is_off_by_default_and_names_the_weak_group():
    from defect_assets.ml.groups import group_metrics
    from defect_assets.pipeline.champion import group_floor_gate

    groups = group_metrics([1, 0, 1, 0, 0, 1], [0.9, 0.1, 0.3, 0.6, 0.7, 0.2], 0.5, list("aabbbb"), "cell_type")
    assert group_floor_gate(groups).passed and group_floor_gate(None, floor=0.8).passed
    gate = group_floor_gate(groups, "roc_auc", 0.8)
    assert not gate.passed and "cell_type=b: roc_auc 0.000" in gate.description
    assert "cell_type=a" not in gate.description


def test_the_group_floor_is_a_blocking_champion_check_reading_the_stored_report(tmp_path):
    """On when groupings are named: the champion's stored report names a weak group, the gate fails
    with that group named; with no grouping in the report, or the floor off, it passes."""
    import json

    from defect_assets.definitions import build_defs
    from defect_assets.ml.groups import group_metrics
    from defect_assets.pipeline.champion import GROUP_FLOOR, Champion, group_gate
    from defect_assets.storage.local import LocalObjectStore

    store = LocalObjectStore(tmp_path)
    groups = group_metrics([1, 0, 1, 0, 0, 1, 1, 0], [0.9, 0.1, 0.8, 0.2, 0.7, 0.2, 0.3, 0.6], 0.5,
                           list("aaaabbbb"), "cell_type")
    store.write_bytes("evaluations/x/e1/report.json", json.dumps(_report_doc(groups)).encode())
    store.write_bytes("evaluations/x/e2/report.json", json.dumps(_report_doc(None)).encode())

    def champion(key, floor):
        return Champion("v1", "x", "roc_auc", 0.9, 0.5, "e", "", {}, 0.6, 0.02, report_json=key,
                        group_floor=floor)

    gate = group_gate(champion("evaluations/x/e1/report.json", 0.6), store)
    assert not gate.passed and "cell_type=b: roc_auc 0.000" in gate.description
    assert gate.metadata["groups"] == 2 and gate.metadata["below"] == 1
    assert group_gate(champion("evaluations/x/e1/report.json", None), store).passed
    assert group_gate(champion("evaluations/x/e2/report.json", 0.6), store).passed
    checks = {key.name for c in build_defs().asset_checks for key in c.check_keys}
    assert GROUP_FLOOR in checks


def _report_doc(groups):
    """A stored binary report (the records test's 2026-12-03 one) with ``groups``."""
    import copy

    from defect_assets_tests.test_records import BINARY_2026_12_03

    doc = copy.deepcopy(BINARY_2026_12_03)
    doc["groups"] = groups
    return doc
