"""Evaluation: metrics equal scikit-learn's, the threshold is the validation F1 optimum, the
no-positives refusal, the append-only history, the offline HTML report, and the champion's
blocking checks stopping a bad model before anything downstream."""

from html.parser import HTMLParser

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from defect_assets.ml.evaluation import ThresholdError, binary_report, choose_threshold, multiclass_report
from defect_assets.ml.report_html import render_report
from defect_assets.pipeline.evaluate import HISTORY_COLUMNS, HISTORY_CSV, append_history
from defect_assets.storage import LocalObjectStore

Y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
S = np.array([0.10, 0.35, 0.40, 0.80, 0.70, 0.65, 0.90, 0.20, 0.30, 0.55])


def test_binary_metrics_equal_scikit_learn():
    r = binary_report(Y, S, threshold=0.6)
    pred = (S >= 0.6).astype(int)
    assert r["accuracy"] == skm.accuracy_score(Y, pred)
    assert r["balanced_accuracy"] == skm.balanced_accuracy_score(Y, pred)
    assert r["precision"] == skm.precision_score(Y, pred) and r["recall"] == skm.recall_score(Y, pred)
    assert r["f1"] == skm.f1_score(Y, pred)
    assert r["roc_auc"] == skm.roc_auc_score(Y, S) and r["pr_auc"] == skm.average_precision_score(Y, S)
    assert r["confusion_matrix"] == [[5, 1], [1, 3]]  # tn fp / fn tp, counted by hand


def test_threshold_maximizes_f1_on_validation_hand_checked():
    # candidates (score >= t): t=0.65 -> tp 3 (0.65, 0.7, 0.9), fp 1 (0.8), fn 1 -> F1 = 6/8 = 0.75
    # t=0.30 -> tp 4, fp 4 (0.35, 0.4, 0.8, 0.55) -> F1 = 8/12 = 0.667; t=0.70 -> tp 2, fp 1 -> 4/7 = 0.571
    assert choose_threshold(Y, S) == 0.65
    # a missed defect costing 10 false alarms: catch all four (t = 0.30, cost 4 false alarms)
    assert choose_threshold(Y, S, "cost", cost_missed_defect=10, cost_false_alarm=1) == 0.30


def test_no_positive_in_validation_is_refused_with_a_reason():
    with pytest.raises(ThresholdError, match="the validation split has no defect"):
        choose_threshold(np.zeros(5, int), np.linspace(0, 1, 5))
    with pytest.raises(ThresholdError, match="empty"):
        choose_threshold(np.zeros(0, int), np.zeros(0))


def test_multiclass_report_per_class_and_ovr():
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.3, .4, .3], [.1, .8, .1], [.6, .3, .1]])
    r = multiclass_report(y, p, ["a", "b", "c"])
    assert r["accuracy"] == skm.accuracy_score(y, p.argmax(1))
    assert [c["recall"] for c in r["per_class"]] == [1.0, 1.0, 0.5]
    assert r["per_class"][2]["roc_auc_ovr"] == skm.roc_auc_score(y == 2, p[:, 2])
    assert r["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 1, 1]]


def test_history_appends_one_row_per_evaluation_and_keeps_old_bytes(tmp_path):
    store = LocalObjectStore(tmp_path)
    row = lambda i: {c: (f"eval-{i}" if c == "evaluation_id" else 0.5 if c in ("accuracy", "roc_auc") else "x")  # noqa: E731
                     for c in HISTORY_COLUMNS}
    assert len(append_history(store, [row(1), row(2)])) == 2
    before = store.read_bytes(HISTORY_CSV)
    assert len(append_history(store, [row(2), row(3)])) == 1  # eval-2 is already there
    after = store.read_bytes(HISTORY_CSV)
    assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1
    hist = pd.read_parquet(tmp_path / "evaluation_history" / "evaluation_history.parquet")
    assert list(hist["evaluation_id"]) == ["eval-1", "eval-2", "eval-3"] and list(hist.columns) == HISTORY_COLUMNS


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_html_report_is_self_contained():
    png = (b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    html = render_report("t <x>", {"model": "m"}, [("Metrics", pd.DataFrame({"a": [1.0]}), [png])])
    p = _Refs()
    p.feed(html)
    assert p.refs and all(r.startswith("data:image/png;base64,") for r in p.refs)
    assert "script" not in p.tags and "link" not in p.tags and "http" not in html
    assert "t &lt;x&gt;" in html


# --- the evaluation assets and the champion's blocking checks, on small generated batches ---

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from defect_assets_tests.helpers.model_assets import prepared_batches

    root = tmp_path_factory.mktemp("eval")
    instance, resources, _ = prepared_batches(root, ["e1", "e2"], first_seed=40, n_images=18)
    return root, instance, resources


def _all_assets():
    from defect_assets_tests.helpers.deploy import all_assets

    return all_assets()


def _run(trained, selection, ops, extra=()):
    _, instance, resources = trained
    return dg.materialize([*_all_assets(), *extra], selection=selection, instance=instance, resources=resources,
                          run_config={"ops": ops}, raise_on_error=False)


@pytest.mark.slow
def test_evaluation_chain_champion_and_a_bad_model_blocked(trained):
    from defect_assets.pipeline.champion import NOT_WORSE as CHECK_NOT_WORSE
    from defect_assets.pipeline.evaluate import HISTORY_PARQUET
    from defect_assets.pipeline.family_registry import families
    from defect_assets.storage.registry import ModelRegistry
    from defect_assets_tests.helpers.model_assets import TINY

    root, instance, _ = trained
    store = LocalObjectStore(root / "data" / "artifacts")

    @dg.asset(deps=["champion_model"])
    def after_champion() -> None:
        """A plain downstream asset: it must not run when a champion check fails."""

    models = [f.asset for f in families()]
    downstream = [*(f.evaluation for f in families()), "evaluation_history", "champion_model", "after_champion"]
    ops = {k: TINY["ops"][k] for k in models}
    good = _run(trained, models + downstream, ops, extra=[after_champion])
    assert good.success
    done = {e.asset_key.to_user_string() for e in good.get_asset_materialization_events()}
    assert set(downstream) <= done
    assert all(e.passed for e in good.get_asset_check_evaluations())
    registry = ModelRegistry(store)
    champion = good.output_for_node("champion_model")
    version = champion.model_version
    registry.promote(version)  # what deployment will do
    hist1 = pd.read_parquet(store.local_path(HISTORY_PARQUET))
    csv1 = store.read_bytes(HISTORY_CSV)
    n = len(models)
    assert len(hist1) == n and set(hist1["model_family"]) == {a.removesuffix("_model") for a in models}
    report = next(r for r in hist1.to_dict("records") if r["model_version"] == version)
    html = store.read_bytes(report["report_html"]).decode()
    assert "data:image/png;base64," in html and "http" not in html

    # every family learns from permuted labels (the ensemble of such members is as bad)
    bad_ops = {k: {"config": {**ops[k]["config"], "shuffle_labels": True}} if k != "ensemble_model" else ops[k]
               for k in models}
    bad = _run(trained, models + downstream, bad_ops, extra=[after_champion])
    checks = {e.check_name: e for e in bad.get_asset_check_evaluations()}
    assert checks[CHECK_NOT_WORSE].passed is False
    meta = checks[CHECK_NOT_WORSE].metadata
    assert meta["candidate_roc_auc"].value < meta["production_roc_auc"].value
    done = {e.asset_key.to_user_string() for e in bad.get_asset_materialization_events()}
    assert "champion_model" in done and "after_champion" not in done  # blocked downstream
    assert registry.production()["version"] == version  # production untouched
    later = _run(trained, ["deployed_endpoint"], {})  # a separate deploy run refuses too
    assert not later.success and registry.production()["version"] == version
    failure = next(e for e in later.all_events if e.is_step_failure)
    assert "champion checks failed (not_worse_than_production" in failure.step_failure_data.error.message

    hist2 = pd.read_parquet(store.local_path(HISTORY_PARQUET))
    assert len(hist2) == 2 * n  # exactly one new row per evaluation
    assert store.read_bytes(HISTORY_CSV).startswith(csv1)  # older rows byte-identical
    pd.testing.assert_frame_equal(hist2.iloc[:n].reset_index(drop=True), hist1)
