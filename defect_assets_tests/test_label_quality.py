"""Label quality: confident learning finds flipped labels in a clean data set, the per-image table
of the pipeline stage, labeler agreement with gold and Cohen's kappa on hand-made cases, and the
active-learning batch strategies."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from defect_assets.ml import active_learning as AL
from defect_assets.ml.label_quality import (
    cohen_kappa,
    gold_agreement,
    label_issues,
    labeler_report,
    out_of_fold_proba,
    self_confidence,
)
from defect_assets.pipeline.label_quality import find_issues, gold_candidates, issue_counts


def flipped_digits(rate: float = 0.10, seed: int = 0, n: int = 600):
    """sklearn's bundled 8x8 handwritten digits (a clean, real data set), ``n`` of them, with
    ``rate`` of the labels moved to another class at random."""
    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(d.target))[:n]
    x, y = d.data[idx].astype(np.float32), d.target[idx].astype(np.int64)
    flipped = rng.choice(n, int(round(rate * n)), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    return x, y, noisy, np.sort(flipped)


def test_flipped_labels_are_found_in_the_top_of_the_ranking():
    x, clean, noisy, flipped = flipped_digits()
    classes = [str(c) for c in range(10)]
    proba = out_of_fold_proba(x, noisy, classes, folds=5, C=0.05)
    found = label_issues(noisy, proba)
    top = found.ranking()[:len(flipped)]
    recall = len(set(top) & set(flipped)) / len(flipped)
    flagged = found.ranked
    precision = len(set(flagged) & set(flipped)) / max(1, len(flagged))
    print(f"flipped {len(flipped)}: top-{len(flipped)} recall {recall:.2f}; cleanlab flagged {len(flagged)}, "
          f"precision {precision:.2f}")
    assert recall >= 0.70
    assert precision >= 0.50
    assert len(set(top) & set(flipped)) / len(top) >= 0.50  # the top-N's own precision (N = number flipped)
    # the suggested label of a found flip is mostly the true one
    hits = np.intersect1d(top, flipped)
    assert (found.suggested[hits] == clean[hits]).mean() >= 0.8
    np.testing.assert_allclose(found.self_confidence, proba[np.arange(len(noisy)), noisy])


def test_out_of_fold_rows_never_come_from_a_model_that_saw_them():
    # a 1-nearest-duplicate design: every item has a twin with the same features and the OTHER label;
    # a model that saw an item would be pulled to its given label, out of fold it cannot tell
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    p = out_of_fold_proba(x, y, ["a", "b"], folds=4)
    assert p.shape == (40, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (self_confidence(y, p) > 0.5).mean() >= 0.85  # a separable problem is mostly confident out of fold


def test_find_issues_table_and_counts(monkeypatch):
    import multiprocessing.pool

    def no_pool(*a, **k):  # a fork of a process running ONNX Runtime threads can deadlock (a CI run hung so)
        raise AssertionError("label issues must not fork a multiprocessing pool")

    monkeypatch.setattr(multiprocessing.pool.Pool, "__init__", no_pool)
    x, _, noisy, flipped = flipped_digits(n=300, seed=2)
    keep = np.isin(noisy, [0, 1, 7])  # three labels, as a small product line might have
    rows = pd.DataFrame({"batch": np.where(np.arange(keep.sum()) % 2, "b1", "b2"),
                         "image": [f"img{i}.png" for i in range(keep.sum())], "image_id": [f"id{i}" for i in
                                                                                           range(keep.sum())],
                         "given_label": [str(v) for v in noisy[keep]],
                         "source": np.where(np.arange(keep.sum()) % 3, "labels.csv", "labeling page"),
                         "stored_key": "k", "width": 8, "height": 8,
                         "labeler": ""})
    issues = find_issues(rows, x[keep], folds=3)
    assert len(issues) == keep.sum()
    assert list(issues["rank"]) == list(range(1, len(issues) + 1))
    assert issues["is_issue"].iloc[: int(issues["is_issue"].sum())].all()  # suspects first
    assert set(issues["suggested_label"]) <= {"0", "1", "7"}
    counts = issue_counts(issues)
    assert counts["images"].sum() == len(issues)
    assert counts["issues"].sum() == int(issues["is_issue"].sum())
    assert set(counts["source"]) == {"labels.csv", "labeling page"}
    gold = gold_candidates(issues, 6)
    assert len(gold) == 6 and sorted(gold["label"].value_counts()) == [2, 2, 2]
    chosen = issues.set_index("image").loc[gold["image"]]
    assert (~chosen["is_issue"]).all() and (chosen["source"] == "labels.csv").all()


def test_gold_agreement_and_kappa_are_exact_on_a_hand_made_case():
    assert gold_agreement(["ok", "ok", "defect", "ok"], ["ok", "defect", "defect", "ok"]) == 0.75
    # a: ok ok ok defect defect ; b: ok ok defect defect ok  -> po = 3/5, pe = (3/5*3/5 + 2/5*2/5) = 13/25
    a = ["ok", "ok", "ok", "defect", "defect"]
    b = ["ok", "ok", "defect", "defect", "ok"]
    assert cohen_kappa(a, b) == pytest.approx((3 / 5 - 13 / 25) / (1 - 13 / 25))
    assert cohen_kappa(a, a) == 1.0
    gold = {"g1": "ok", "g2": "defect"}
    events = ([{"labeler": "ana", "key": k, "label": v} for k, v in zip(["i1", "i2", "i3", "i4", "i5"], a)]
              + [{"labeler": "bo", "key": k, "label": v} for k, v in zip(["i1", "i2", "i3", "i4", "i5"], b)]
              + [{"labeler": "ana", "key": "g1", "label": "ok"}, {"labeler": "ana", "key": "g2", "label": "defect"},
                 {"labeler": "bo", "key": "g1", "label": "defect"}, {"labeler": "bo", "key": "g2", "label": "defect"}])
    report = {r["labeler"]: r for r in labeler_report(events, gold)}
    assert report["ana"]["gold_agreement"] == 1.0 and report["bo"]["gold_agreement"] == 0.5
    assert report["ana"]["labeled"] == 5 and report["ana"]["gold_answered"] == 2
    assert report["ana"]["kappa_vs_others"] == pytest.approx(1 / 6)
    assert report["bo"]["kappa_vs_others"] == pytest.approx(1 / 6)


def test_kcenter_covers_the_far_cluster_and_noise_aware_down_weights():
    rng = np.random.default_rng(0)
    near = rng.normal(0, 0.1, size=(30, 2))
    far = rng.normal(10, 0.1, size=(5, 2))
    pool = np.concatenate([near, far])
    labeled = rng.normal(0, 0.1, size=(10, 2))
    picks = AL.kcenter_greedy(pool, labeled, 2)
    assert len(set(picks)) == 2 and picks[0] >= 30  # the first pick is in the cluster nobody labeled
    proba = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])
    scores = AL.noise_aware_scores(proba, np.array([0.0, 0.9, 0.0]))
    assert scores[0] > scores[1] > scores[2] - 1e-12
    amb = AL.neighbour_ambiguity(np.array([[0.0, 0.0], [10.0, 10.0]]), np.array([[0.1, 0.0], [10.0, 9.9]]),
                                 np.array([0.0, 1.0]), n_neighbors=1)
    np.testing.assert_allclose(amb, [0.0, 1.0])


def test_gold_items_are_mixed_in_scored_and_never_stored_as_labels(tmp_path):
    from defect_assets.ml.scorer import load_registered
    from defect_assets.pipeline.active_learning import QueueSettings, publish_next_queue
    from defect_assets.serving.labeling import LabelingDesk
    from defect_assets.storage.labeling import GoldLog, LabelLog, write_gold
    from defect_assets_tests.helpers.labeling import synthetic_pool
    from defect_assets_tests.helpers.serving import model_registry

    store, registry, versions = model_registry(tmp_path / "artifacts")
    registry.promote(versions["a"], threshold=0.5)
    scorer = load_registered(registry, versions["a"])
    classes = scorer.classes
    known = synthetic_pool(store, n=4, batch="line-1", seed=11)
    write_gold(store, known.assign(label=[classes[i % 2] for i in range(4)]))
    queue = publish_next_queue(store, scorer, synthetic_pool(store, n=6), QueueSettings(per_round=6, gold_rate=0.25),
                               heatmaps=False)
    gold_rows = queue.items[queue.items["gold_label"] != ""]
    assert len(gold_rows) == 2 and len(queue.items) == 8  # 2 / 8 = the configured 25 %
    assert set(gold_rows["image"]) <= set(known["image"]) and (gold_rows["strategy"] == "gold").all()
    assert list(queue.items["rank"]) == list(range(1, 9))

    desk = LabelingDesk(store)
    g1, g2 = gold_rows.to_dict("records")
    real = queue.items[queue.items["gold_label"] == ""].to_dict("records")
    wrong = [c for c in classes if c != g2["gold_label"]][0]
    desk.label("ana", g1["item_id"], g1["gold_label"])
    desk.label("ana", g2["item_id"], g2["gold_label"])
    desk.label("ben", g1["item_id"], g1["gold_label"])
    desk.label("ben", g2["item_id"], wrong)
    for r, (a, b) in zip(real[:4], [(classes[0], classes[0]), (classes[0], classes[1]), (classes[1], classes[1]),
                                    (classes[1], classes[1])]):
        desk.label("ana", r["item_id"], a)
        desk.label("ben", r["item_id"], b)
    labels = LabelLog(store).labels()
    assert set(labels["image"]) == {r["image"] for r in real[:4]}  # no gold item among the labels
    assert "line-1" not in set(labels["batch"]) and "line-1" not in LabelLog(store).digests()
    assert len(GoldLog(store).events()) == 4
    view = desk.view("ana")
    assert {i["item_id"]: i["status"] for i in view["items"]}[g1["item_id"]] == "labeled"
    assert desk.view("cy")["next"] is not None  # a new labeler still has the gold items to answer
    report = {r["labeler"]: r for r in desk.labeler_quality()}
    assert report["ana"]["gold_agreement"] == 1.0 and report["ben"]["gold_agreement"] == 0.5
    assert report["ana"]["gold_answered"] == 2 and report["ana"]["labeled"] == 4
    # ana a a b b vs ben a b b b: po = 3/4, pe = 2/4*1/4 + 2/4*3/4 = 1/2 -> kappa 1/2
    assert report["ana"]["kappa_vs_others"] == pytest.approx(0.5)


def test_label_issues_asset_writes_the_table_counts_and_gold(tmp_path):
    import dagster as dg

    from defect_assets.defs.active_learning.label_issues import ISSUE_COUNTS_CSV, LabelIssuesConfig, label_issues
    from defect_assets.defs.resources import LocalStorage
    from defect_assets.storage.formats import ArrayTable
    from defect_assets.storage.labeling import read_gold, read_label_issues

    x, _, noisy, _ = flipped_digits(n=240, seed=3)
    keep = np.flatnonzero(np.isin(noisy, [0, 1]))  # two labels: ok (0) and defect (1)
    names = np.where(noisy[keep] == 1, "defect", "ok")
    feats, raws, labels = {}, {}, {}
    for b, part in (("b1", keep[::2]), ("b2", keep[1::2])):
        ids = [f"sha{i}" for i in part]
        lab = np.where(noisy[part] == 1, "defect", "ok")
        table = pd.DataFrame({"patch_id": ids, "image_id": ids, "label": lab, "is_defect": lab == "defect",
                              "split": "train"})
        feats[b] = ArrayTable(table, {"features": x[part]}, {})
        raws[b] = ArrayTable(pd.DataFrame({"path": [f"{i}.png" for i in part], "sha256": ids, "role": "image",
                                           "stored_key": [f"images/{i}.png" for i in part], "width": 8, "height": 8}),
                             {}, {})
        labels[b] = pd.DataFrame({"image": [f"{i}.png" for i in part], "kind": "image", "label": lab,
                                  "source": "labels.csv"})
    (tmp_path / "a").mkdir()
    resource = LocalStorage(root=str(tmp_path / "a"))
    out = label_issues(dg.build_asset_context(), LabelIssuesConfig(folds=3, gold_items=4), backbone_features=feats,
                       raw_images=raws, image_labels=labels, artifact_store=resource)
    table = out.value
    assert len(table) == len(keep) and set(table["batch"]) == {"b1", "b2"}
    assert set(table["given_label"]) == {"ok", "defect"} == set(names)
    store = resource.open()
    assert len(read_label_issues(store)) == len(keep)
    counts = pd.read_csv(store.open_read(ISSUE_COUNTS_CSV))
    assert counts["images"].sum() == len(keep) and counts["issues"].sum() == int(table["is_issue"].sum())
    gold = read_gold(store)
    assert len(gold) == 4 and sorted(gold["label"]) == ["defect", "defect", "ok", "ok"]
    assert out.metadata["issues"].value == int(table["is_issue"].sum())
