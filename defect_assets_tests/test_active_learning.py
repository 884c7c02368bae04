"""Active-learning strategies on hand-made probability matrices: each picks the items a person
would pick by hand, random is a seeded baseline that ignores the scores, and the diversity step
spreads a round over clusters."""

import numpy as np
import pytest

from defect_assets.ml.active_learning import (
    badge,
    cluster_uncertainty,
    entropy,
    gradient_norms_and_kernel,
    least_confidence,
    margin,
    rank,
    select,
)

# Four classes, built so that each strategy has a different favourite:
P = np.array([
    [0.97, 0.01, 0.01, 0.01],  # 0: confident
    [0.38, 0.37, 0.25, 0.00],  # 1: the worst best-score (0.38)
    [0.40, 0.20, 0.20, 0.20],  # 2: the flattest (entropy 1.33 nats)
    [0.45, 0.45, 0.10, 0.00],  # 3: a dead heat between two classes (margin 0)
    [0.70, 0.20, 0.10, 0.00],  # 4: fairly sure
])


def test_each_strategy_picks_its_expected_item_first_and_ranks_all_by_hand():
    assert select(P, 1, "least_confidence").picks.tolist() == [1]
    assert select(P, 1, "entropy").picks.tolist() == [2]
    assert select(P, 1, "margin").picks.tolist() == [3]
    # whole orders, worked out by hand from the numbers above
    assert rank(P, "least_confidence").tolist() == [1, 2, 3, 4, 0]  # max p .38 .40 .45 .70 .97
    assert rank(P, "margin").tolist() == [3, 1, 2, 4, 0]  # margins 0 .01 .20 .50 .96
    assert rank(P, "entropy").tolist() == [2, 1, 3, 4, 0]  # 1.33 1.08 .95 .80 .17 nats
    assert select(P, 3, "entropy").picks.tolist() == [2, 1, 3]


def test_the_measures_have_the_textbook_values():
    np.testing.assert_allclose(least_confidence(P), [0.03, 0.62, 0.60, 0.55, 0.30])
    np.testing.assert_allclose(margin(P), [0.96, 0.01, 0.20, 0.00, 0.50], atol=1e-12)
    uniform = np.full((1, 4), 0.25)
    np.testing.assert_allclose(entropy(uniform), [np.log(4)])
    np.testing.assert_allclose(entropy(np.array([[1.0, 0.0]])), [0.0])  # 0 log 0 = 0, no NaN


def test_for_two_classes_the_three_uncertainty_strategies_agree():
    p1 = np.array([0.02, 0.55, 0.91, 0.38, 0.49, 0.70])
    binary = np.stack([1 - p1, p1], axis=1)
    expected = [4, 1, 3, 5, 2, 0]  # by |p - 0.5|: .01 .05 .12 .20 .41 .48
    for strategy in ("entropy", "margin", "least_confidence"):
        assert rank(binary, strategy).tolist() == expected, strategy


def test_they_still_agree_on_float32_rows_of_a_very_unsure_model():
    """A model trained on a few labels puts the pool within 1e-4 of 0.5, and hands over float32
    rows (1 - p and p rounded separately): entropy must rank by the model, not by the rounding."""
    d = np.random.default_rng(0).uniform(-1e-4, 1e-4, 400)
    p1 = 0.5 + d
    rows = np.stack([1 - p1, p1], axis=1).astype(np.float32)
    by_hand = np.argsort(np.abs(rows[:, 1].astype(np.float64) - 0.5), kind="stable")[:20]
    for strategy in ("entropy", "margin", "least_confidence"):
        assert sorted(select(rows, 20, strategy).picks.tolist()) == sorted(by_hand.tolist()), strategy


def test_random_is_a_seeded_baseline_that_ignores_the_scores():
    picks = {seed: select(P, 3, "random", seed=seed).picks.tolist() for seed in range(40)}
    assert picks[7] == select(P, 3, "random", seed=7).picks.tolist()  # same seed, same picks
    assert all(len(set(p)) == 3 and set(p) <= set(range(5)) for p in picks.values())
    assert len({tuple(p) for p in picks.values()}) > 10  # seeds differ
    first = [p[0] for p in picks.values()]
    assert 0 in first  # the confident item, which no uncertainty strategy would ask about first


def test_diversity_spreads_one_round_over_two_clusters():
    # the five most uncertain items sit in one cluster of the feature space, a sixth elsewhere
    p1 = np.array([0.50, 0.51, 0.475, 0.535, 0.455, 0.60, 0.99, 0.01])  # |p - .5| all distinct
    proba = np.stack([1 - p1, p1], axis=1)
    features = np.array([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [0.05, 0.05], [10, 10], [5, 0], [0, 5]], float)
    plain = select(proba, 2, "entropy")
    spread = select(proba, 2, "entropy", features=features, shortlist_factor=3)
    assert plain.picks.tolist() == [0, 1]  # both from the tight cluster
    assert spread.picks.tolist() == [0, 5] and spread.diversity  # the most uncertain, then the far one
    # the shortlist bounds it: with a shortlist of the 2 most uncertain, nothing else can be picked
    assert select(proba, 2, "entropy", features=features, shortlist_factor=1).picks.tolist() == [0, 1]


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown strategy"):
        select(P, 1, "most_fun")
    with pytest.raises(ValueError, match=r"\(N, K>=2\)"):
        entropy(np.array([0.2, 0.8]))
    with pytest.raises(ValueError, match="feature rows"):
        select(P, 1, "entropy", features=np.zeros((3, 2)))


def test_badge_spreads_a_batch_over_uncertain_items_of_different_kinds():
    """Two clusters of uncertain items (40 near each other, 5 far away, a little less uncertain) and
    55 confident items: a batch of 4 by entropy comes from the big cluster only; every BADGE batch
    (10 seeds) takes items from both uncertain clusters, and at most 1 confident item (their
    gradients are all near zero: one point for k-means++, so once one is picked the rest are near it)."""
    rng = np.random.default_rng(0)
    near = rng.normal(0, 0.1, (40, 3))
    far = rng.normal(0, 0.1, (5, 3)) + [6.0, 0, 0]
    sure = rng.normal(0, 1.0, (55, 3)) + [0, 4.0, 0]
    features = np.concatenate([near, far, sure])
    p1 = np.concatenate([0.5 + rng.uniform(-0.02, 0.02, 40), 0.5 + rng.uniform(-0.03, -0.02, 5),
                         rng.choice([0.001, 0.999], 55)])
    proba = np.stack([1 - p1, p1], axis=1)
    assert set(select(proba, 4, "entropy").picks.tolist()) <= set(range(40))
    for seed in range(10):
        picks = badge(proba, features, 4, seed=seed)
        assert len(set(picks.tolist())) == 4
        assert any(p < 40 for p in picks) and any(40 <= p < 45 for p in picks), picks  # both clusters
        assert (picks >= 45).sum() <= 1, picks
    assert badge(proba, features, 4, seed=3).tolist() == badge(proba, features, 4, seed=3).tolist()


def test_badge_embedding_is_the_loss_gradient_if_the_guess_were_the_label():
    """The kernel trick gives the squared norms of (p - onehot(guess)) outer x, checked against the
    explicit (N, K * D) embedding for four classes."""
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(4), 30)
    features = rng.normal(size=(30, 5))
    r, x, sq = gradient_norms_and_kernel(proba, features)
    p = proba / proba.sum(axis=1, keepdims=True)
    g = p - np.eye(4)[p.argmax(axis=1)]
    z = (features - features.mean(axis=0)) / features.std(axis=0)
    explicit = (g[:, :, None] * z[:, None, :]).reshape(30, -1)
    np.testing.assert_allclose(sq, (explicit ** 2).sum(axis=1))
    np.testing.assert_allclose((r @ r[7]) * (x @ x[7]), explicit @ explicit[7])
    with pytest.raises(ValueError, match="feature rows"):
        badge(proba, features[:5], 2)


def test_entropy_clusters_asks_the_most_uncertain_image_of_every_region():
    """Three regions of the feature space (100, 30 and 10 images, the small one far away); the 3
    flattest images overall are all in the big region, so entropy asks about one kind of image
    three times. entropy+clusters asks about each region once, and within each region about its
    flattest image, most uncertain first."""
    rng = np.random.default_rng(2)
    features = np.concatenate([rng.normal(0, 0.3, (100, 4)), rng.normal(0, 0.3, (30, 4)) + [5, 0, 0, 0],
                               rng.normal(0, 0.3, (10, 4)) + [0, 40, 0, 0]])
    p1 = np.concatenate([rng.uniform(0.40, 0.60, 100), rng.uniform(0.70, 0.95, 30), rng.uniform(0.80, 0.99, 10)])
    proba = np.stack([1 - p1, p1], axis=1)
    region = np.repeat([0, 1, 2], [100, 30, 10])
    assert set(region[select(proba, 3, "entropy").picks]) == {0}
    query = select(proba, 3, "entropy+clusters", features=features)
    assert sorted(region[query.picks]) == [0, 1, 2] and query.diversity
    h = entropy(proba)
    for r in range(3):  # each pick is its region's highest entropy
        assert h[query.picks[region[query.picks] == r][0]] == h[region == r].max()
    assert list(h[query.picks]) == sorted(h[query.picks], reverse=True)
    assert query.picks.tolist() == cluster_uncertainty(proba, features, 3).tolist()
    with pytest.raises(ValueError, match="needs the pool's features"):
        select(proba, 3, "entropy+clusters")


def test_the_labeling_queue_accepts_entropy_clusters_and_records_it():
    import pandas as pd

    from defect_assets.pipeline.active_learning import POOL_COLUMNS, QueueSettings, build_queue

    rng = np.random.default_rng(3)
    pool = pd.DataFrame([{"batch": "line-9", "image": f"p{i:02d}.png", "image_id": f"{i:064x}", "stored_key": f"k{i}",
                          "width": 64, "height": 64} for i in range(12)], columns=POOL_COLUMNS)
    features = np.concatenate([rng.normal(0, 0.1, (8, 3)), rng.normal(0, 0.1, (4, 3)) + 10])
    p1 = np.concatenate([rng.uniform(0.45, 0.55, 8), rng.uniform(0.8, 0.9, 4)])
    items = build_queue(pool, np.stack([1 - p1, p1], axis=1), ["ok", "defect"], "v1",
                        QueueSettings(strategy="entropy+clusters").strategy, 2, features=features)
    assert items["strategy"].tolist() == ["entropy+clusters"] * 2 and items["diversity"].all()
    assert sorted(items["image"].str[1:3].astype(int) // 8) == [0, 1]  # one of each group
    with pytest.raises(ValueError, match="entropy\\+clusters"):
        QueueSettings(strategy="clusters")
