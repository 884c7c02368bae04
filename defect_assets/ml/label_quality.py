"""Label quality, pure NumPy/sklearn/cleanlab (no Dagster):

- ``out_of_fold_proba``: class probabilities for every labeled item from a model that never saw
  its label (stratified k-fold, the pipeline's elastic net on cached features: seconds, no retrain
  of a network),
- ``self_confidence``: the out-of-fold probability of the GIVEN label (low = suspect),
- ``label_issues``: confident learning (Northcutt et al., ``cleanlab.filter.find_label_issues``),
  the suspects ranked worst first, with the suggested label,
- ``gold_agreement`` and ``cohen_kappa``: how often a labeler agrees with known answers, and
  chance-corrected agreement between two labelers on the items both labeled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defect_assets.ml.linear import fit_elastic_net


def out_of_fold_proba(x: np.ndarray, y: np.ndarray, classes: list[str], folds: int = 5, C: float = 0.05,
                      l1_ratio: float = 0.5, seed: int = 0, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """(N, K) probabilities; row i from the model fit on the folds without i. ``y`` holds class
    indices. Folds are stratified (a class with fewer items than folds is spread as far as it goes)."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows for {len(y)} labels")
    folds = max(2, min(int(folds), len(y)))
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    out = np.zeros((len(y), len(classes)), np.float64)
    for f in range(folds):
        test, train = fold_of == f, fold_of != f
        if not test.any():
            continue
        w = None if sample_weight is None else np.asarray(sample_weight)[train]
        model = fit_elastic_net(x[train], y[train], classes, C=C, l1_ratio=l1_ratio, seed=seed, sample_weight=w)
        out[test] = model.predict_proba(x[test])
    return out / out.sum(axis=1, keepdims=True)


def self_confidence(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """The probability the out-of-fold model gives the given label."""
    y = np.asarray(y, np.int64)
    return np.asarray(proba, np.float64)[np.arange(len(y)), y]


@dataclass(frozen=True)
class LabelIssues:
    """``ranked``: indices of the suspects, worst first; ``suggested``: the model's label for every
    item (argmax of the out-of-fold probabilities); ``self_confidence`` for every item."""

    ranked: np.ndarray
    suggested: np.ndarray
    self_confidence: np.ndarray

    @property
    def is_issue(self) -> np.ndarray:
        flag = np.zeros(len(self.suggested), bool)
        flag[self.ranked] = True
        return flag

    def ranking(self) -> np.ndarray:
        """Every item, most suspect first: cleanlab's suspects in its order, then the rest by
        self-confidence (lowest first)."""
        rest = np.setdiff1d(np.arange(len(self.suggested)), self.ranked)
        rest = rest[np.argsort(self.self_confidence[rest], kind="stable")]
        return np.concatenate([self.ranked, rest]).astype(np.int64)


def label_issues(y: np.ndarray, proba: np.ndarray) -> LabelIssues:
    """Confident learning on out-of-fold probabilities (cleanlab's default 'prune_by_noise_rate'),
    the suspects ranked by self-confidence. Classes that never occur in ``y`` are dropped first
    (cleanlab needs every column to be a given label somewhere)."""
    from cleanlab.filter import find_label_issues

    y = np.asarray(y, np.int64)
    p = np.asarray(proba, np.float64)
    present = np.unique(y)
    remap = np.full(p.shape[1], -1)
    remap[present] = np.arange(len(present))
    sub = p[:, present]
    sub = sub / np.where(sub.sum(axis=1, keepdims=True) > 0, sub.sum(axis=1, keepdims=True), 1.0)
    sc = self_confidence(y, p)
    if len(present) < 2:
        ranked = np.zeros(0, np.int64)
    else:
        # n_jobs=1: cleanlab's default forks a multiprocessing pool, and a fork of a process that runs
        # ONNX Runtime / TensorFlow threads can deadlock on a lock held at fork time (a suite hung so)
        ranked = np.asarray(find_label_issues(remap[y], sub, return_indices_ranked_by="self_confidence", n_jobs=1),
                            np.int64)
    return LabelIssues(ranked, p.argmax(axis=1), sc)


def gold_agreement(given: list, gold: list) -> float:
    """Fraction of gold items a labeler answered with the known label (NaN for none)."""
    if len(given) != len(gold):
        raise ValueError("given and gold must be the same length")
    if not given:
        return float("nan")
    return float(np.mean([a == b for a, b in zip(given, gold)]))


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's kappa between two labelers' labels of the same items (sklearn); NaN for no items,
    1.0 when both gave one and the same label throughout (no chance to correct for)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b):
        raise ValueError("both labelers need the same items")
    if not a:
        return float("nan")
    if len(set(a) | set(b)) == 1:
        return 1.0
    return float(cohen_kappa_score(a, b))


def labeler_report(events: list[dict], gold: dict[str, str]) -> list[dict]:
    """Per labeler: items labeled, gold items answered, agreement with gold, and the mean Cohen's
    kappa against every other labeler who labeled at least 2 of the same items. ``events`` are
    {'labeler', 'key', 'label'} (the last label per labeler and key counts); ``gold`` key -> label."""
    last: dict[str, dict[str, str]] = {}
    for e in events:
        last.setdefault(str(e["labeler"]), {})[str(e["key"])] = str(e["label"])
    rows = []
    for who, labels in sorted(last.items()):
        on_gold = [k for k in labels if k in gold]
        kappas = []
        for other, theirs in sorted(last.items()):
            if other == who:
                continue
            common = sorted(set(labels) & set(theirs) - set(gold))
            if len(common) >= 2:
                kappas.append(cohen_kappa([labels[k] for k in common], [theirs[k] for k in common]))
        rows.append({"labeler": who, "labeled": len(labels) - len(on_gold), "gold_answered": len(on_gold),
                     "gold_agreement": gold_agreement([labels[k] for k in on_gold], [gold[k] for k in on_gold]),
                     "kappa_vs_others": float(np.mean(kappas)) if kappas else float("nan"),
                     "kappa_pairs": len(kappas)})
    return rows
