"""Patch cutting: point patches are the crop around the point, negatives avoid defects,
image-level labels are resized, and the split is stable and never leaks."""

import numpy as np
import pandas as pd
import pytest

from defect_assets.ml.patches import (
    PatchSpec,
    center_crop,
    context_size,
    crop_centered,
    cut_image_patches,
    sample_negative_centers,
)
from defect_assets.ml.splits import assign_split, find_leaks
from defect_assets_tests.conftest import smooth_image


def test_context_size_fits_any_rotation():
    for s in (16, 32, 64, 65, 128):
        S = context_size(s)
        assert S >= s * 2 ** 0.5 and (S - s) % 2 == 0
    assert context_size(64) == 94


def test_point_patch_equals_the_crop_around_the_point():
    img = smooth_image(200, 300)
    spec = PatchSpec(size=64, negatives_per_positive=0)
    (cut,) = cut_image_patches(img, [dict(kind="point", label="dent", x=150, y=90)], spec, np.random.default_rng(0))
    assert np.array_equal(cut.patch(64), img[90 - 32:90 + 32, 150 - 32:150 + 32])
    S = context_size(64)
    assert np.array_equal(cut.context, img[90 - S // 2:90 + S // 2, 150 - S // 2:150 + S // 2])
    assert (cut.kind, cut.label, cut.x, cut.y) == ("point", "dent", 150.0, 90.0)


def test_point_near_the_border_stays_centered_with_mirrored_pixels():
    img = smooth_image(100, 120)
    patch = center_crop(crop_centered(img, 5, 7, 94), 64)
    padded = np.pad(img, 40, mode="reflect")
    assert patch.shape == (64, 64)
    assert np.array_equal(patch, padded[40 + 7 - 32:40 + 7 + 32, 40 + 5 - 32:40 + 5 + 32])
    assert np.array_equal(patch[32:, 32:], img[7:7 + 32, 5:5 + 32])  # the real pixels are where they belong


def test_negatives_overlap_no_defect_and_stay_inside():
    rng = np.random.default_rng(1)
    boxes = np.array([[100, 100, 164, 164], [250, 40, 290, 90]], dtype=float)
    centers = sample_negative_centers(rng, 400, 300, 64, boxes, n=12)
    assert len(centers) == 12
    wins = [(cx - 32, cy - 32, cx + 32, cy + 32) for cx, cy in centers]
    for x0, y0, x1, y1 in wins:
        assert 0 <= x0 and x1 <= 400 and 0 <= y0 and y1 <= 300
        for bx0, by0, bx1, by1 in boxes:
            assert x1 <= bx0 or x0 >= bx1 or y1 <= by0 or y0 >= by1
    for i in range(len(wins)):  # negatives do not overlap each other either
        for j in range(i):
            a, b = wins[i], wins[j]
            assert a[2] <= b[0] or a[0] >= b[2] or a[3] <= b[1] or a[1] >= b[3]


def test_points_give_positives_plus_negatives_at_the_ratio():
    img = smooth_image(256, 320)
    rows = [dict(kind="point", label="dent", x=60, y=60), dict(kind="point", label="scratch", x=250, y=200)]
    cuts = cut_image_patches(img, rows, PatchSpec(size=32, negatives_per_positive=1.5), np.random.default_rng(0))
    assert [c.kind for c in cuts] == ["point", "point", "negative", "negative", "negative"]
    for c in cuts[2:]:
        assert c.label == "background"
        for r in rows:  # default defect_radius = size/2: negative windows keep clear of each point's patch
            assert abs(c.x - r["x"]) >= 32 or abs(c.y - r["y"]) >= 32


def test_box_labels_center_patch_and_block_negatives():
    img = smooth_image(200, 200)
    row = dict(kind="box", label="knot", x=100, y=100, xmin=60, ymin=70, xmax=140, ymax=130)
    cuts = cut_image_patches(img, [row], PatchSpec(size=32, negatives_per_positive=3), np.random.default_rng(0))
    assert cuts[0].kind == "box" and np.array_equal(cuts[0].patch(32), img[84:116, 84:116])
    for c in cuts[1:]:
        assert c.x + 16 <= 60 or c.x - 16 >= 140 or c.y + 16 <= 70 or c.y - 16 >= 130


def test_image_level_label_resizes_the_whole_image():
    img = np.zeros((300, 300), np.uint8)
    img[:, 150:] = 200
    (cut,) = cut_image_patches(img, [dict(kind="image", label="1.0000")], PatchSpec(size=64), np.random.default_rng(0))
    p = cut.patch(64)
    assert p.shape == (64, 64) and cut.kind == "image"
    assert (p[:, :32] == 0).all() and (p[:, 32:] == 200).all()


def test_split_is_a_pure_function_of_the_image_and_has_the_right_proportions():
    shas = [f"{i:064x}" for i in range(4000)]
    first = [assign_split(s) for s in shas]
    assert first == [assign_split(s) for s in shas]
    frac = pd.Series(first).value_counts(normalize=True)
    assert (abs(frac["train"] - 0.70) < 0.03 and abs(frac["validation"] - 0.15) < 0.03
            and abs(frac["test"] - 0.15) < 0.03)


def test_find_leaks():
    a = pd.DataFrame({"image_id": ["i1", "i1", "i2"], "split": ["train", "train", "test"]})
    b = pd.DataFrame({"image_id": ["i2", "i3"], "split": ["validation", "test"]})
    assert find_leaks([a]).empty
    leaks = find_leaks([a, b])
    assert leaks.to_dict("records") == [{"image_id": "i2", "splits": "test,validation"}]


@pytest.mark.parametrize("bad", [(1.2, 0.1), (0.7, 0.5), (0, 0.1)])
def test_bad_split_fractions(bad):
    with pytest.raises(ValueError, match="split fractions"):
        assign_split("ab" * 32, *bad)
