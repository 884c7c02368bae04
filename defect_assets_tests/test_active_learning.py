"""Active-learning strategies on hand-made probability matrices: each picks the items a person
would pick by hand, random is a seeded baseline that ignores the scores, and the diversity step
spreads a round over clusters."""

import numpy as np
import pytest

from defect_assets.ml.active_learning import entropy, least_confidence, margin, rank, select

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
