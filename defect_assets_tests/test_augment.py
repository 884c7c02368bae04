"""The 48x augmentation: exact count, the right angles (against Pillow's rotation), mirrors,
and the random affine variants."""

import numpy as np
import pytest
from PIL import Image

from defect_assets.ml.augment import (
    N_VARIANTS,
    RandomAffine,
    augment_48,
    random_affine_variants,
    rotate_contexts,
    variant_table,
)
from defect_assets.ml.patches import center_crop, context_size
from defect_assets_tests.conftest import smooth_image


def pillow_reference(context: np.ndarray, angle: int, size: int) -> np.ndarray:
    """The tutorial's way: rotate the picture with Pillow (counter-clockwise), take the center."""
    return center_crop(np.asarray(Image.fromarray(context).rotate(angle, resample=Image.BILINEAR)), size)


def test_48_views_per_patch_in_documented_order():
    S = context_size(32)
    ctx = np.stack([smooth_image(S, S, seed) for seed in range(5)])
    out = augment_48(ctx, 32)
    assert out.shape == (5, 48, 32, 32) and N_VARIANTS == 48
    src, angle, mirrored = variant_table(5)
    assert len(src) == 240 and list(angle[:4]) == [0, 0, 15, 15] and list(mirrored[:4]) == [False, True, False, True]
    assert np.array_equal(out[:, 0], ctx[:, (S - 32) // 2:(S + 32) // 2, (S - 32) // 2:(S + 32) // 2])
    # all 48 views of a non-symmetric patch differ from each other
    flat = out[0].reshape(48, -1)
    assert len({v.tobytes() for v in flat}) == 48


@pytest.mark.parametrize("angle", [15, 30, 45, 60, 75, 90, 135, 180, 255, 270, 345])
def test_rotations_match_a_reference_rotation(angle):
    S = context_size(64)
    ctx = smooth_image(S, S, seed=angle)
    out = augment_48(ctx[None], 64)[0]
    j = 2 * (angle // 15)
    ref = pillow_reference(ctx, angle, 64).astype(int)
    diff = np.abs(out[j].astype(int) - ref)
    assert diff.mean() < 1.0 and diff.max() <= 3  # bilinear rounding differences only
    wrong = pillow_reference(ctx, angle + 15, 64).astype(int)  # and it is not the neighbouring angle
    assert np.abs(out[j].astype(int) - wrong).mean() > 5


def test_quarter_turns_are_exact_and_mirrors_are_left_right_flips():
    S = context_size(64)
    ctx = smooth_image(S, S, seed=9)
    out = augment_48(ctx[None], 64)[0]
    base = out[0]
    for q in range(4):
        assert np.array_equal(out[12 * q], np.rot90(base, k=q))
    for j in range(0, 48, 2):
        assert np.array_equal(out[j + 1], out[j][:, ::-1])


def test_color_patches_and_worker_count_do_not_change_results():
    S = context_size(32)
    ctx = np.stack([np.stack([smooth_image(S, S, 3 * i + c) for c in range(3)], axis=2) for i in range(300)])
    one = augment_48(ctx, 32, workers=1, chunk=64)
    two = augment_48(ctx, 32, workers=2, chunk=64)
    assert one.shape == (300, 48, 32, 32, 3) and np.array_equal(one, two)
    assert np.array_equal(one[7, 12], np.rot90(one[7, 0], k=1))


def test_rotate_contexts_refuses_small_context():
    with pytest.raises(ValueError, match="too small"):
        augment_48(np.zeros((1, 40, 40), np.uint8), 32)


def test_random_affine_variants_are_seeded_and_bounded():
    S = context_size(32)
    ctx = np.stack([smooth_image(S, S, s) for s in range(4)])
    a, src = random_affine_variants(ctx, 32, 3, np.random.default_rng(5))
    b, _ = random_affine_variants(ctx, 32, 3, np.random.default_rng(5))
    c, _ = random_affine_variants(ctx, 32, 3, np.random.default_rng(6))
    assert a.shape == (12, 32, 32) and list(src) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # with every range collapsed to the identity, a "random" view is exactly the patch
    ident = RandomAffine(max_shift=0, scale=(1, 1), max_shear_deg=0, stretch=(1, 1), flips=False, rotate=False)
    same, _ = random_affine_variants(ctx, 32, 2, np.random.default_rng(0), ident)
    assert np.array_equal(same[::2], ctx[:, (S - 32) // 2:(S + 32) // 2, (S - 32) // 2:(S + 32) // 2])
    # zooming out by up to 1.6 reaches past the context: edges are clamped, values stay in range
    zoom = RandomAffine(max_shift=0, scale=(1.6, 1.6), max_shear_deg=0, stretch=(1, 1), flips=False, rotate=False)
    z, _ = random_affine_variants(ctx, 32, 1, np.random.default_rng(0), zoom)
    assert z.shape == (4, 32, 32) and not np.array_equal(z, same[::2])


def test_rotate_identity():
    S = context_size(16)
    ctx = smooth_image(S, S)[None]
    assert np.array_equal(rotate_contexts(ctx, 16, 0)[0], center_crop(ctx[0], 16))


def test_training_can_keep_only_quarter_turns_and_mirrors():
    import pandas as pd

    from defect_assets.pipeline.patching import build_augmented_set
    from defect_assets.pipeline.training import augmented_data
    from defect_assets.storage.formats import ArrayTable

    S = context_size(16)
    table = pd.DataFrame({"patch_id": ["a", "b", "c"], "image_id": ["i", "j", "k"], "label": ["ok", "dent", "ok"],
                          "is_defect": [False, True, False], "split": ["train", "train", "test"]})
    ps = ArrayTable(table, {"context": np.stack([smooth_image(S, S, s) for s in range(3)])}, {"size": 16})
    aug = build_augmented_set(ps)
    assert len(aug) == 96  # the test patch is never augmented
    quarter = augmented_data({"b1": aug}, "binary", ["ok", "defect"], angle_step=90)
    assert len(quarter.y) == 16 and sorted(set(quarter.table["angle"])) == [0, 90, 180, 270]
    assert list(quarter.y[:8]) == [0] * 8 and list(quarter.y[8:]) == [1] * 8
    assert len(augmented_data({"b1": aug}, "binary", ["ok", "defect"], angle_step=15).y) == 96
    with pytest.raises(ValueError, match="multiple of 15"):
        augmented_data({"b1": aug}, "binary", ["ok", "defect"], angle_step=20)
