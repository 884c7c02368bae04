"""The inference seam's options, on a real (small) Keras model: test-time views average the
quarter turns and mirrors; a model with a smaller input than its patches shrinks them the way
training did; full-size images and patches give the same answer; the compiled path gives the
eager numbers; an ensemble is its members' weighted average."""

from __future__ import annotations

import numpy as np
import pytest

from defect_assets.ml.preprocess import shrink_patches, whole_image_patch
from defect_assets.ml.scorer import Scorer, dihedral_views, load_registered, load_scorer
from defect_assets_tests.conftest import png_bytes, smooth_image


@pytest.fixture(scope="module")
def keras_bytes():
    from defect_assets.ml.cnn import make_scratch_cnn
    from defect_assets.ml.training import model_to_bytes, seed_everything

    seed_everything(3)
    return model_to_bytes(make_scratch_cnn((32, 32, 1), 2, "small_vgg", filters=(4, 8), dropout=0.0))


def card(**extra) -> dict:
    return {"version": "m-1", "kind": "keras", "task": "binary", "classes": ["ok", "defect"],
            "input": {"size": 32, "channels": 1}, **extra}


def test_dihedral_views_are_the_eight_distinct_symmetries():
    x = smooth_image(16, 16, seed=2)[None]
    views = dihedral_views(x, 8)
    assert len(views) == 8 and np.array_equal(views[0], x)
    assert len({v.tobytes() for v in views}) == 8
    assert [len(dihedral_views(x, n)) for n in (1, 2, 4)] == [1, 2, 4]
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        dihedral_views(x, 3)


def test_test_time_views_average_the_model_over_the_views(keras_bytes):
    patches = np.stack([smooth_image(32, 32, seed=s) for s in range(5)])
    plain = load_scorer(card(), lambda _: keras_bytes)
    tta = load_scorer(card(inference={"views": 8}), lambda _: keras_bytes)
    want = np.mean([plain.predict_proba(v) for v in dihedral_views(patches, 8)], axis=0)
    np.testing.assert_allclose(tta.predict_proba(patches), want, atol=1e-6)
    assert not np.allclose(tta.predict_proba(patches), plain.predict_proba(patches), atol=1e-6)
    compiled = load_scorer(card(inference={"views": 8}), lambda _: keras_bytes, compiled=True)
    np.testing.assert_allclose(compiled.predict_proba(patches), want, atol=1e-5)


def test_a_smaller_input_shrinks_patches_and_photos_as_training_did(keras_bytes):
    scorer = load_scorer(card(input={"size": 32, "channels": 1, "patch_size": 96}), lambda _: keras_bytes)
    assert (scorer.input_size, scorer.patch_size) == (32, 96)
    photo = smooth_image(300, 300, seed=9)
    patch96 = whole_image_patch(photo, 96)  # what labeled_patches stored for this image
    want = scorer.predict_proba(shrink_patches(patch96[None], 32))
    np.testing.assert_allclose(scorer.predict_proba(patch96[None]), want, atol=1e-6)  # a stored patch
    np.testing.assert_allclose(scorer.predict_images([png_bytes(photo)]), want, atol=1e-6)  # the photo itself
    with pytest.raises(ValueError, match="expects patches of shape"):
        scorer.predict_proba(np.zeros((1, 64, 64), np.uint8))


def test_an_ensemble_is_the_weighted_average_of_its_members(tmp_path, keras_bytes):
    import json

    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(LocalObjectStore(tmp_path))
    base = {k: v for k, v in card().items() if k != "version"}
    a = registry.register("a", {"model.keras": keras_bytes}, base)
    b = registry.register("b", {"model.keras": keras_bytes}, {**base, "inference": {"views": 2}})
    members = {"members": [a.version, b.version], "weights": [0.25, 0.75]}
    ens = registry.register("ensemble", {"members.json": json.dumps(members).encode()},
                            {**base, "kind": "ensemble"})
    x = np.stack([smooth_image(32, 32, seed=s) for s in range(4)])
    pa = load_registered(registry, a.version).predict_proba(x)
    pb = load_registered(registry, b.version).predict_proba(x)
    np.testing.assert_allclose(load_registered(registry, ens.version).predict_proba(x), 0.25 * pa + 0.75 * pb,
                               atol=1e-6)
    assert isinstance(load_registered(registry, ens.version, compiled=True), Scorer)
