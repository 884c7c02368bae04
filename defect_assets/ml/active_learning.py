"""Active-learning query strategies on a probability matrix, pure NumPy (the wood-knot workshop's
"score the unlabeled pool, pick the most useful cases"):

- ``least_confidence``: the worst best-score first (1 - max p),
- ``margin``: the smallest gap between the two most likely classes first,
- ``entropy``: the flattest distribution first (-sum p log p),
- ``random``: a seeded shuffle, the baseline that shows whether the others help,

plus an optional diversity step (``spread_out``): from a shortlist of the most uncertain items,
greedy k-center picks in feature space, so one round does not spend its labels on near-copies; and
batch strategies over the whole pool: ``kcenter_greedy`` (core-set: farthest from everything
labeled, optionally weighted by uncertainty), ``cluster_uncertainty`` (k-means of the pool into
one cluster per pick, the most uncertain item of each), ``badge`` (Ash et al. 2020: k-means++ seeding on the
gradient the model's loss would have if its own guess were the label, so a batch is both uncertain
and varied) and ``noise_aware_scores`` (uncertainty down-weighted near labeled images the
label-issue ranking doubts, ``neighbour_ambiguity``).

For two classes the three uncertainty measures order items identically (each is a monotone
function of |p - 0.5|); they differ from three classes up. Ties keep the pool's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("entropy", "margin", "least_confidence", "random")
# queue strategies that need the pool's features (``select(..., features=...)``)
FEATURE_STRATEGIES = ("entropy+clusters",)
# batch strategies that need the feature space (and, for noise_aware, the label-issue ranking)
BATCH_STRATEGIES = ("kcenter", "entropy+kcenter", "noise_aware", "badge", "entropy+clusters")


def _proba(proba) -> np.ndarray:
    """Rows as float64 summing to 1. Models hand over float32 rows whose classes were rounded
    separately (1 - p and p); near p = 0.5 that rounding (~1e-7) outweighs entropy's differences
    (~(p - 0.5)^2), and entropy would rank by rounding noise instead of by the model."""
    p = np.asarray(proba, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"expected an (N, K>=2) probability matrix, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and >= 0")
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)


def least_confidence(proba) -> np.ndarray:
    """1 - the highest class probability: high when even the best guess is weak."""
    return 1.0 - _proba(proba).max(axis=1)


def margin(proba) -> np.ndarray:
    """The gap between the two most likely classes (small = uncertain; picked smallest first)."""
    top2 = np.sort(_proba(proba), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(proba) -> np.ndarray:
    """Shannon entropy in nats (0 = certain, log K = uniform)."""
    p = np.clip(_proba(proba), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def uncertainty(proba, strategy: str) -> np.ndarray:
    """A score where higher means "ask a person first" (margin is negated; random has none: zeros)."""
    if strategy == "entropy":
        return entropy(proba)
    if strategy == "margin":
        return -margin(proba)
    if strategy == "least_confidence":
        return least_confidence(proba)
    if strategy == "random":
        return np.zeros(len(_proba(proba)))
    raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def rank(proba, strategy: str, seed: int = 0) -> np.ndarray:
    """Every row index, most useful to label first."""
    n = len(_proba(proba))
    if strategy == "random":
        return np.random.default_rng(seed).permutation(n)
    return np.argsort(-uncertainty(proba, strategy), kind="stable")


def spread_out(features: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-center on standardized features: start from the first (most uncertain)
    candidate, then repeatedly add the candidate farthest from everything picked so far.
    Returns k indices (into the pool) in pick order."""
    candidates = np.asarray(candidates, np.int64)
    k = min(k, len(candidates))
    if k <= 0:
        return np.zeros(0, np.int64)
    x = np.asarray(features, np.float64)[candidates]
    scale = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(scale > 1e-12, scale, 1.0)
    picked = [0]
    dist = ((x - x[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        nxt = int(np.argmax(dist))  # argmax takes the first of equals: the more uncertain one
        picked.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(axis=1))
    return candidates[np.asarray(picked)]


@dataclass(frozen=True)
class Query:
    """One round's picks (indices into the pool, in the order a person should see them) and the
    score that ranked them."""

    picks: np.ndarray
    scores: np.ndarray
    strategy: str
    diversity: bool


def select(proba, k: int, strategy: str = "entropy", seed: int = 0, features: np.ndarray | None = None,
           shortlist_factor: int = 5) -> Query:
    """The ``k`` items a person should label next. With ``features`` (one row per pool item), the
    diversity step spreads the picks over the ``shortlist_factor * k`` most useful items;
    ``entropy+clusters`` needs them and picks the highest entropy of each of k clusters instead."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if strategy in FEATURE_STRATEGIES:
        if features is None:
            raise ValueError(f"strategy {strategy!r} needs the pool's features")
        return Query(cluster_uncertainty(proba, features, k, "entropy", seed), entropy(proba), strategy, True)
    order = rank(proba, strategy, seed)
    scores = uncertainty(proba, strategy)
    if features is None:
        return Query(order[:k], scores, strategy, False)
    if len(features) != len(order):
        raise ValueError(f"{len(features)} feature rows for a pool of {len(order)}")
    shortlist = order[: max(k, shortlist_factor * k)]
    return Query(spread_out(features, shortlist, k), scores, strategy, True)


def _standardize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    scale = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(scale > 1e-12, scale, 1.0)


def kcenter_greedy(pool_features: np.ndarray, labeled_features: np.ndarray, k: int,
                   scores: np.ndarray | None = None) -> np.ndarray:
    """Core-set batch (Sener & Savarese): repeatedly the pool item farthest from everything labeled
    or already picked, in standardized feature space (statistics over pool and labeled together).
    With ``scores`` (higher = more useful, >= 0) the distance is multiplied by the score, so the
    batch covers the space where the model is unsure. Returns k pool indices in pick order."""
    n = len(pool_features)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    both = _standardize(np.concatenate([np.asarray(pool_features), np.asarray(labeled_features)])
                        if len(labeled_features) else np.asarray(pool_features))
    x, lab = both[:n], both[n:]
    sq = (x ** 2).sum(axis=1)
    if len(lab):
        dist = np.full(n, np.inf)
        for start in range(0, len(lab), 512):  # chunks keep the (n, m) distance matrix small
            chunk = lab[start:start + 512]
            d = sq[:, None] + (chunk ** 2).sum(axis=1)[None, :] - 2 * x @ chunk.T
            dist = np.minimum(dist, d.min(axis=1))
        dist = np.maximum(dist, 0.0)
    else:
        dist = ((x - x.mean(axis=0)) ** 2).sum(axis=1)
    weight = np.ones(n) if scores is None else np.maximum(np.asarray(scores, np.float64), 0.0) + 1e-12
    picked: list[int] = []
    for _ in range(k):
        nxt = int(np.argmax(np.where(np.isin(np.arange(n), picked), -np.inf, dist * weight)))
        picked.append(nxt)
        dist = np.minimum(dist, np.maximum(sq + sq[nxt] - 2 * x @ x[nxt], 0.0))
    return np.asarray(picked, np.int64)


def neighbour_ambiguity(pool_features: np.ndarray, labeled_features: np.ndarray, labeled_ambiguity: np.ndarray,
                        n_neighbors: int = 5) -> np.ndarray:
    """Each pool item's ambiguity in [0, 1]: the mean ambiguity (e.g. 1 - self-confidence of the given
    label, out of fold, from ``ml/label_quality.py``) of its ``n_neighbors`` nearest labeled items.
    Unlabeled items have no label to doubt; their neighbours' labels stand in for it."""
    amb = np.clip(np.asarray(labeled_ambiguity, np.float64), 0.0, 1.0)
    if not len(amb):
        return np.zeros(len(pool_features))
    n = len(pool_features)
    both = _standardize(np.concatenate([np.asarray(pool_features), np.asarray(labeled_features)]))
    x, lab = both[:n], both[n:]
    d = (x ** 2).sum(axis=1)[:, None] + (lab ** 2).sum(axis=1)[None, :] - 2 * x @ lab.T
    m = min(n_neighbors, len(amb))
    nearest = np.argpartition(d, m - 1, axis=1)[:, :m]
    return amb[nearest].mean(axis=1)


def noise_aware_scores(proba, ambiguity: np.ndarray, strategy: str = "entropy", strength: float = 1.0) -> np.ndarray:
    """Uncertainty down-weighted where labels are likely noise: score * (1 - strength * ambiguity),
    so the loop stops spending its labels on the cells whose labels are closest to coin flips."""
    u = uncertainty(proba, strategy)
    u = u - u.min() if len(u) else u  # margin's scores are negative; make them >= 0 first
    return u * np.clip(1.0 - strength * np.asarray(ambiguity, np.float64), 0.0, 1.0)


def gradient_norms_and_kernel(proba, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BADGE's gradient embedding of a linear softmax without building it: for item i,
    g_i = (p_i - onehot(argmax p_i)) outer x_i (binary: one logit, (p1 - guess) * x_i), with x
    standardized over the pool. Returns (the class part r, the standardized x, squared norms), since
    <g_i, g_j> = <r_i, r_j> * <x_i, x_j> and a (N, K * D) matrix is never needed."""
    p = _proba(proba)
    r = p.copy()
    r[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    if p.shape[1] == 2:
        r = r[:, 1:]  # one logit: its gradient is p1 - guess
    x = _standardize(features)
    return r, x, (r ** 2).sum(axis=1) * (x ** 2).sum(axis=1)


def badge(proba, features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """BADGE (Ash et al., "Deep batch active learning by diverse, uncertain gradient lower bounds",
    2020) for the pipeline's linear model: k-means++ seeding over the gradient embeddings. The first
    pick is the longest gradient (the most uncertain item far from the mean); each next pick is drawn
    with probability proportional to its squared distance from the nearest pick so far, so a batch
    spreads over uncertain items of different kinds. Confident items have near-zero gradients and
    are rarely drawn. Returns k pool indices in pick order (seeded)."""
    n = len(_proba(proba))
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows for a pool of {n}")
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    r, x, sq = gradient_norms_and_kernel(proba, features)
    rng = np.random.default_rng(seed)
    picked = [int(np.argmax(sq))]
    dist = np.full(n, np.inf)
    for _ in range(k):
        j = picked[-1]
        dist = np.minimum(dist, np.maximum(sq + sq[j] - 2 * (r @ r[j]) * (x @ x[j]), 0.0))
        dist[picked] = 0.0
        if len(picked) == k:
            break
        total = dist.sum()
        if total <= 0:  # every remaining item is a copy of a pick: take them in pool order
            rest = np.setdiff1d(np.arange(n), picked)
            picked += rest[: k - len(picked)].tolist()
            break
        picked.append(int(rng.choice(n, p=dist / total)))
    return np.asarray(picked, np.int64)


def cluster_uncertainty(proba, features: np.ndarray, k: int, strategy: str = "entropy", seed: int = 0) -> np.ndarray:
    """One pick per region of the pool: k-means (scikit-learn, one seeded initialization) splits the
    pool into ``k`` clusters in feature space as given, and each cluster sends its most uncertain
    item by ``strategy``. A round then asks about the doubtful case of every kind of image instead of
    ``k`` near-copies of the single most doubtful kind. Returns k pool indices, most uncertain first."""
    scores = uncertainty(proba, strategy)
    n = len(scores)
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows for a pool of {n}")
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    from sklearn.cluster import KMeans

    members = KMeans(k, n_init=1, random_state=seed).fit_predict(np.asarray(features, np.float64))
    order = np.argsort(-scores, kind="stable")
    first_of = {}
    for i in order:  # the first item of each cluster in uncertainty order is its most uncertain
        first_of.setdefault(int(members[i]), int(i))
    picks = sorted(first_of.values(), key=lambda i: (-scores[i], i))
    if len(picks) < k:  # k-means left a cluster empty: the most uncertain of the rest fill the batch
        taken = set(picks)
        picks += [int(i) for i in order if int(i) not in taken][: k - len(picks)]
    return np.asarray(picks, np.int64)
