"""Benchmark: active learning on ELPV, simulated. The labels are hidden; each run starts from a
small random seed set, and every round the strategy picks ``k`` images of the pool, their labels
are revealed, and the pipeline's elastic net is retrained on the pretrained backbone features
(computed once per run). Strategies: entropy, margin, least confidence (worst best-score) and
random (the baseline), optionally entropy + the diversity step; with ``--strategies`` also the batch
ones: kcenter, entropy+kcenter, noise_aware(+weights), badge, qbc and entropy+clusters (k-means of the
pool into k clusters, the highest entropy of each). Several seeds; each seed has its
own stratified 75/25 pool/test split (as in the ELPV paper), the same for every strategy.

    .venv/bin/python bench/active_learning.py [--task binary|multiclass] [--seeds 5] [--k 20]
        [--seed-set 20] [--budget 600] [--size 64] [--blocks 3 4] [--diversity] [--plot PATH]
        [--backbone vgg16|lite0] [--cache /tmp/lite_feats] [--pca 128]
        [--strategies entropy kcenter entropy+kcenter noise_aware badge qbc]
        [--class-weight balanced|none] [--c-cv] [--soft] [--validate]

The model in the loop is the same for every strategy, random included: the pipeline's elastic net
(C 0.05, l1_ratio 0.5, balanced class weights) unless ``--class-weight none`` (plain weights),
``--c-cv`` (C picked every round by 3-fold cross-validation on the labeled set only, the defect
score's AUC over a fixed grid) or ``--soft`` (binary: the oracle answers ELPV's probability and an
unsure cell is a soft target). ``--validate`` runs the loop on 75% of each seed's pool and reports
AUC on the other 25% of the pool: the test split is never read, so knobs are chosen there.

Prints test ROC AUC against the number of labels for every strategy (mean over seeds and the
spread), and the target's ratio: the labels the best strategy needs to reach random's
final AUC, over the labels random needed for it (target <= 0.60). Saves the learning curves as a
PNG (default bench/results/active_learning_<task>.png).

Binary task: for two classes, entropy, margin and least confidence rank the pool identically (each
is a monotone function of |p - 0.5|), so their curves coincide; they differ in the 4-class task
(ELPV's defect probability levels), where AUC is the defect score's (p(2/3) + p(1)) binary AUC.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from defect_assets.datasets.elpv import elpv_labels, elpv_root  # noqa: E402
from defect_assets.ml import active_learning as AL  # noqa: E402
from defect_assets.ml.backbone import extract_features, feature_extractor  # noqa: E402
from defect_assets.ml.label_quality import label_issues, out_of_fold_proba, self_confidence  # noqa: E402
from defect_assets.ml.linear import fit_elastic_net, soft_binary_rows  # noqa: E402
from defect_assets.ml.preprocess import prepare_patch  # noqa: E402

UNCERTAIN = ("entropy", "margin", "least_confidence")
WEIGHTED = "noise_aware+weights"
"""noise_aware, and the elastic net trained with the labels cleanlab flags (out of fold, 3 folds) at weight 0.2."""
QBC = "qbc"
"""Query by committee: 8 bootstrap fits of the model; the entropy of their mean minus their mean entropy
(BALD's disagreement), the top k."""
BATCH = (*AL.BATCH_STRATEGIES, WEIGHTED, QBC)
C, L1_RATIO = 0.05, 0.5  # the elastic net's defaults in the pipeline (ElasticNetConfig)
C_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # --c-cv's choices, fixed before any run


@dataclass(frozen=True)
class LoopModel:
    """The model every strategy's loop retrains each round (random's too)."""

    class_weight: str | None = "balanced"
    c_cv: bool = False
    soft: bool = False

    def fit(self, x, y, prob, classes, seed: int, sample_weight=None, C: float | None = None):
        """(fitted model, its C) on the labeled rows ``x``, class indices ``y`` and ELPV probabilities
        ``prob`` (used only with ``soft``, for two classes)."""
        if C is None:
            C = self.pick_C(x, y, prob, classes, seed) if self.c_cv else globals()["C"]
        if self.soft and len(classes) == 2:
            xs, ys, ws = soft_binary_rows(x, prob)
            if sample_weight is not None:  # each item appears once per side it has weight on
                keep = np.asarray(prob) > 0, np.asarray(prob) < 1
                ws = ws * np.concatenate([sample_weight[keep[0]], sample_weight[keep[1]]])
            return fit_elastic_net(xs, ys, classes, C=C, l1_ratio=L1_RATIO, class_weight=self.class_weight,
                                   sample_weight=ws), C
        return fit_elastic_net(x, y, classes, C=C, l1_ratio=L1_RATIO, class_weight=self.class_weight,
                               sample_weight=sample_weight), C

    def pick_C(self, x, y, prob, classes, seed: int, folds: int = 3) -> float:
        """The C of ``C_GRID`` with the best out-of-fold defect-score AUC on the labeled set (stratified
        folds; ties to the smaller C); the default C while a fold would lack a class."""
        defect = np.asarray(prob) >= 0.5
        if min(np.bincount(defect.astype(int), minlength=2)) < folds:
            return globals()["C"]
        rng = np.random.default_rng(seed)
        fold_of = np.empty(len(y), np.int64)
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            fold_of[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
        best, best_c = -np.inf, globals()["C"]
        for c_value in C_GRID:
            oof = np.zeros(len(y))
            for f in range(folds):
                held = fold_of == f
                model, _ = self.fit(x[~held], y[~held], prob[~held], classes, seed, C=c_value)
                oof[held] = defect_score(model.predict_proba(x[held]), classes)
            auc = roc_auc_score(defect, oof)
            if auc > best + 1e-9:
                best, best_c = auc, c_value
        return best_c

    def describe(self) -> str:
        c = f"C by 3-fold CV on the labeled set over {list(C_GRID)}" if self.c_cv else f"C {C}"
        return (f"elastic net, {c}, l1_ratio {L1_RATIO}, class weights {self.class_weight or 'none'}"
                + (", soft targets for unsure cells" if self.soft else ""))


def elpv_features(size: int, blocks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(features, defect probability) of all 2,624 cells: each cell prepared as the pipeline
    prepares a whole image (area-downscaled), then the frozen offline VGG16 blocks, pooled."""
    labels = elpv_labels()
    root = elpv_root()
    patches = np.stack([prepare_patch((root / rel).read_bytes(), size) for rel in labels["path"]])
    fx = feature_extractor((size, size, 1), blocks, "offline")
    return extract_features(fx, patches, 64), labels["probability"].to_numpy()


def lite_features(size: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features, defect probability) of all cells from the pipeline's default backbone: Lite0 stages
    4, 5, 6 and top at ``size`` px on ONNX Runtime, mean+max pooled, each cell prepared as the pipeline
    prepares an image. Cached as .npy in ``cache`` (the backbone pass is the only slow part)."""
    from defect_assets.ml.backbone import make_extractor

    labels = elpv_labels()
    path = cache / f"lite0_{size}_prepared.npy"
    if path.exists():
        return np.load(path), labels["probability"].to_numpy()
    root = elpv_root()
    patches = np.stack([prepare_patch((root / rel).read_bytes(), size) for rel in labels["path"]])
    fx = make_extractor({"backbone": "lite0", "stages": ["4", "5", "6", "top"], "runtime": "onnxruntime"},
                        (size, size, 1))
    f = extract_features(fx, patches, 32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, f)
    return f, labels["probability"].to_numpy()


def stratified_split(y: np.ndarray, rng: np.random.Generator, test: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    pool, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = int(round(len(idx) * test))
        held += list(idx[:n])
        pool += list(idx[n:])
    return rng.permutation(np.array(pool)), np.sort(np.array(held))


def seed_set(y: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random pool items, redrawn until every class has at least one (a model needs them)."""
    for _ in range(1000):
        pick = rng.choice(pool, n, replace=False)
        if len(np.unique(y[pick])) == len(np.unique(y)):
            return pick
    raise RuntimeError("could not draw a seed set with every class")


def defect_score(proba: np.ndarray, classes: list[str]) -> np.ndarray:
    if len(classes) == 2:
        return proba[:, 1]
    return proba[:, [float(c) >= 0.5 for c in classes]].sum(axis=1)


def run_curve(x: np.ndarray, y: np.ndarray, defect: np.ndarray, classes: list[str], pool: np.ndarray,
              test: np.ndarray, start: np.ndarray, strategy: str, k: int, budget: int, seed: int,
              diversity: bool = False, twins: tuple[str, ...] = (), loop: LoopModel = LoopModel(),
              prob: np.ndarray | None = None) -> tuple[list[tuple[int, float]], bool]:
    """(labels, test AUC) after the seed set and after every round up to the budget, and whether
    every strategy in ``twins`` picked exactly the same images as ``strategy`` in every round
    (then their curves are this one: same picks, same models)."""
    labeled = list(start)
    rest = np.setdiff1d(pool, start)
    prob = defect.astype(float) if prob is None else prob
    curve, same = [], True
    while True:
        weights = None
        if strategy == WEIGHTED and len(labeled) >= 40:
            oof = out_of_fold_proba(x[labeled], y[labeled], classes, folds=3, C=C, l1_ratio=L1_RATIO, seed=seed)
            weights = np.where(label_issues(y[labeled], oof).is_issue, 0.2, 1.0)
        model, c_now = loop.fit(x[labeled], y[labeled], prob[labeled], classes, seed + len(labeled), weights)
        curve.append((len(labeled), float(roc_auc_score(defect[test], defect_score(model.predict_proba(x[test]),
                                                                                    classes)))))
        if len(labeled) >= budget or not len(rest):
            return curve, same
        proba = model.predict_proba(x[rest])
        n = min(k, budget - len(labeled))
        if strategy in BATCH:
            picks = batch_picks(x, y, classes, labeled, rest, proba, strategy, n, seed, loop, c_now, prob)
        else:
            query = AL.select(proba, n, strategy, seed=seed + len(labeled), features=x[rest] if diversity else None)
            same = same and all(np.array_equal(AL.select(proba, n, t).picks, query.picks) for t in twins)
            picks = query.picks
        picked = rest[picks]
        labeled += list(picked)
        rest = np.setdiff1d(rest, picked)


def batch_picks(x, y, classes, labeled, rest, proba, strategy: str, n: int, seed: int,
                loop: LoopModel = LoopModel(), c_now: float = C, prob: np.ndarray | None = None) -> np.ndarray:
    """The batch strategies: kcenter (core-set, farthest from everything labeled), entropy+kcenter
    (distances weighted by entropy), badge (k-means++ on gradient embeddings), qbc (disagreement of
    8 bootstrap fits of the loop's model at this round's C) and noise_aware (entropy+kcenter with
    each pool item's entropy down-weighted by the ambiguity of its 5 nearest labeled cells:
    1 - out-of-fold self-confidence of their given labels, 3 folds)."""
    lab = np.asarray(labeled)
    if strategy == "kcenter":
        return AL.kcenter_greedy(x[rest], x[lab], n)
    if strategy == "entropy+kcenter":
        return AL.kcenter_greedy(x[rest], x[lab], n, scores=AL.entropy(proba))
    if strategy == "badge":
        return AL.badge(proba, x[rest], n, seed + len(lab))
    if strategy == "entropy+clusters":
        return AL.cluster_uncertainty(proba, x[rest], n, "entropy", seed + len(lab))
    if strategy == QBC:
        rng = np.random.default_rng(seed + len(lab))
        members = []
        for _ in range(8):
            boot = lab[rng.integers(0, len(lab), len(lab))]
            if len(np.unique(y[boot])) < len(np.unique(y[lab])):
                boot = lab  # a bootstrap that lost a class would not be a committee member of the same model
            member, _ = loop.fit(x[boot], y[boot], prob[boot], classes, seed, C=c_now)
            members.append(np.asarray(member.predict_proba(x[rest]), np.float64))
        members = np.asarray(members)
        disagreement = AL.entropy(members.mean(axis=0)) - np.mean([AL.entropy(m) for m in members], axis=0)
        return np.argsort(-disagreement, kind="stable")[:n]
    oof = out_of_fold_proba(x[lab], y[lab], classes, folds=3, C=C, l1_ratio=L1_RATIO, seed=seed)
    amb = AL.neighbour_ambiguity(x[rest], x[lab], 1.0 - self_confidence(y[lab], oof))
    return AL.kcenter_greedy(x[rest], x[lab], n, scores=AL.noise_aware_scores(proba, amb))  # noise_aware(+weights)


def spread(values) -> float:
    """Sample standard deviation (NaN-aware; 0 for a single value)."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def first_reaching(curve: np.ndarray, labels: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(curve >= target - 1e-12)
    return float(labels[hit[0]]) if len(hit) else float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=["binary", "multiclass"], default="binary")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--k", type=int, default=20, help="labels asked per round")
    p.add_argument("--seed-set", type=int, default=20, help="random labels to start from")
    p.add_argument("--budget", type=int, default=600, help="labels at the end")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--blocks", type=int, nargs="+", default=[3, 4])
    p.add_argument("--diversity", action="store_true", help="also run entropy + the diversity step")
    p.add_argument("--plot", type=Path)
    p.add_argument("--backbone", choices=["vgg16", "lite0"], default="vgg16",
                   help="lite0: the pipeline's default features (stages 4 5 6 top, ONNX Runtime), cached in --cache")
    p.add_argument("--cache", type=Path, default=Path("/tmp/lite_feats"))
    p.add_argument("--pca", type=int, default=0,
                   help="project the features on this many principal components of each seed's POOL (unlabeled "
                        "images, never the test split) first: the elastic net fits in ms instead of seconds")
    p.add_argument("--class-weight", choices=["balanced", "none"], default="balanced",
                   help="the loop model's class weights (every strategy, random included)")
    p.add_argument("--c-cv", action="store_true", help="C per round by 3-fold CV on the labeled set (every strategy)")
    p.add_argument("--soft", action="store_true",
                   help="binary: the oracle answers ELPV's probability; unsure cells train as soft targets")
    p.add_argument("--validate", action="store_true",
                   help="run on 75%% of each seed's pool and report AUC on the other 25%% of the pool (never "
                        "the test split): for choosing knobs")
    p.add_argument("--strategies", nargs="+", default=None,
                   help=f"subset to run (random always runs); batch ones: {', '.join(AL.BATCH_STRATEGIES)}")
    args = p.parse_args()
    loop = LoopModel(None if args.class_weight == "none" else "balanced", args.c_cv, args.soft)

    t0 = time.perf_counter()
    if args.backbone == "lite0":
        feats, prob = lite_features(args.size, args.cache)
        what = f"Lite0 stages 4 5 6 top on ONNX Runtime, mean+max pooled, {args.size} px"
    else:
        feats, prob = elpv_features(args.size, tuple(args.blocks))
        what = f"offline VGG16 blocks {args.blocks}, mean+max pooled, {args.size} px"
    print(f"ELPV: {len(prob)} cells, features {feats.shape[1]} ({what}, area-downscaled as the pipeline does), "
          f"loaded or computed in {time.perf_counter() - t0:.0f}s; {os.cpu_count()} cores", flush=True)
    defect = (prob >= 0.5).astype(int)
    if args.task == "binary":
        classes, y = ["ok", "defect"], defect
    else:
        levels = np.unique(prob)
        classes, y = [f"{v:.4f}" for v in levels], np.searchsorted(levels, prob)
    strategies = ["random", *UNCERTAIN] + (["entropy+diversity"] if args.diversity else [])  # entropy runs first
    if args.strategies:
        strategies = ["random"] + [s for s in args.strategies if s != "random"]
    curves: dict[str, list[np.ndarray]] = {s: [] for s in strategies}
    full = []
    labels = None
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        pool, test = stratified_split(y, rng)
        if args.validate:  # the test split is set aside unread; a quarter of the pool stands in for it
            inner, held = stratified_split(y[pool], np.random.default_rng(777 + seed))
            pool, test = pool[inner], pool[held]
        start = seed_set(y, pool, args.seed_set, rng)
        x = feats
        if args.pca:
            from sklearn.decomposition import PCA

            x = PCA(args.pca, random_state=seed).fit(feats[pool]).transform(feats).astype(np.float32)
        everything, _ = loop.fit(x[pool], y[pool], prob[pool], classes, seed)
        full.append(roc_auc_score(defect[test], defect_score(everything.predict_proba(x[test]), classes)))
        done: dict[str, list] = {}
        for s in strategies:
            if s in done:
                continue
            t = time.perf_counter()
            # the other uncertainty strategies are checked against this run's picks in every round; when
            # they pick the same images throughout (always, for two classes) this run is their run too
            twins = tuple(u for u in UNCERTAIN if u != s and u in strategies) if s == "entropy" else ()
            c, same = run_curve(x, y, defect, classes, pool, test, start,
                                s if s in BATCH else s.split("+")[0], args.k, args.budget,
                                seed, s.endswith("+diversity"), twins, loop, prob)
            done[s] = c
            shared = [u for u in twins if same]
            for u in shared:
                done[u] = c
            note = f" (= {', '.join(shared)}: identical picks every round)" if shared else ""
            took = time.perf_counter() - t
            print(f"  seed {seed} {s:<18} final AUC {c[-1][1]:.4f} ({len(c)} fits, {took:.0f}s){note}", flush=True)
        for s in strategies:
            labels = np.array([n for n, _ in done[s]])
            curves[s].append(np.array([a for _, a in done[s]]))
        print(f"  seed {seed}: pool {len(pool)}, test {len(test)} ({defect[test].mean():.1%} defective), "
              f"all {len(pool)} pool labels: AUC {full[-1]:.4f}", flush=True)

    mean = {s: np.mean(curves[s], axis=0) for s in strategies}
    sd = {s: np.std(curves[s], axis=0, ddof=1) if args.seeds > 1 else np.zeros_like(mean[s]) for s in strategies}
    split = "VALIDATION (a quarter of each pool; test split unread)" if args.validate else "Test"
    print(f"\n{split} ROC AUC (mean +- sd over {args.seeds} seeds) against labels, task {args.task}, "
          f"k = {args.k} per round, seed set {args.seed_set}; model: {loop.describe()}:")
    print(f"{'labels':>7}" + "".join(f"{s:>22}" for s in strategies))
    step = max(1, len(labels) // 15)
    for i in list(range(0, len(labels), step)) + ([len(labels) - 1] if (len(labels) - 1) % step else []):
        print(f"{labels[i]:>7}" + "".join(f"{mean[s][i]:>14.4f} +-{sd[s][i]:.3f}" for s in strategies))
    print(f"all pool labels (~{len(pool)}): AUC {np.mean(full):.4f} +- {spread(full):.3f}")

    # the target: labels to reach random's final AUC, uncertainty vs random
    target = mean["random"][-1]
    n_random = first_reaching(mean["random"], labels, target)
    print(f"\nrandom's final AUC {target:.4f} at {labels[-1]} labels "
          f"(its mean curve first reaches it at {n_random:.0f})")
    ratios = {}
    for s in strategies[1:]:
        n = first_reaching(mean[s], labels, target)
        ratios[s] = n / n_random
        # per seed: that seed's own random final AUC, and the labels each curve needs to reach it
        per_seed = np.array([first_reaching(sc, labels, rc[-1]) / first_reaching(rc, labels, rc[-1])
                             for rc, sc in zip(curves["random"], curves[s])])
        missed = int(np.isnan(per_seed).sum())
        print(f"  {s:<18} reaches it at {n:>5.0f} labels: ratio {ratios[s]:.2f} of random's labels; per seed "
              f"{np.nanmean(per_seed):.2f} +- {spread(per_seed):.2f} (min {np.nanmin(per_seed):.2f}, "
              f"max {np.nanmax(per_seed):.2f}{f', never reached in {missed} seed(s)' if missed else ''})")
    best = min(strategies[1:], key=lambda s: (np.nan_to_num(ratios[s], nan=np.inf), s))
    verdict = "met" if ratios[best] <= 0.60 else "NOT met"
    print(f"best strategy: {best}, ratio {ratios[best]:.2f} (target <= 0.60: {verdict})")

    out = args.plot or Path(__file__).resolve().parent / "results" / f"active_learning_{args.task}.png"
    plot(out, labels, mean, sd, strategies, float(np.mean(full)), args)
    print(f"learning curves: {out}")


def plot(path: Path, labels, mean, sd, strategies, full_auc: float, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for s in strategies:
        style = {"random": dict(color="black", linestyle="--")}.get(s, {})
        ax.plot(labels, mean[s], label=s, **style)
        ax.fill_between(labels, mean[s] - sd[s], mean[s] + sd[s], alpha=0.12, **({"color": "black"} if s == "random"
                                                                                   else {}))
    ax.axhline(full_auc, color="grey", linewidth=0.8, label=f"all pool labels ({full_auc:.3f})")
    ax.axhline(mean["random"][-1], color="black", linewidth=0.6, linestyle=":")
    ax.set_xlabel("labeled images")
    ax.set_ylabel("test ROC AUC (defective vs not)")
    feat = "Lite0 stages 4 5 6 top" if args.backbone == "lite0" else f"VGG16 blocks {args.blocks}"
    ax.set_title(f"Active learning on ELPV ({args.task}, elastic net on {feat} at {args.size} px;"
                 f"\nk = {args.k} per round, {args.seeds} seeds, mean +- sd)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
