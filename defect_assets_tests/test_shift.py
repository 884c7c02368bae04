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
