"""Tests for the SYNTHETIC surface generator (defect_assets.ml.synthetic)."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defect_assets.ml.synthetic import (
    DEFECT_KINDS,
    SyntheticDefect,
    make_surface_scene,
    write_synthetic_surfaces,
)

W, H = 512, 384


def scene(seed: int, **kw):
    return make_surface_scene(np.random.default_rng(seed), **kw)


def window(img: np.ndarray, x: int, y: int, half: int) -> np.ndarray:
    """The (up to) 2*half square around (x, y), clipped at the borders, as float32."""
    return img[max(y - half, 0):y + half, max(x - half, 0):x + half].astype(np.float32)


def local_contrast(w: np.ndarray) -> float:
    """Largest deviation from the window's median: a one-number 'is something there' feature."""
    return float(np.abs(w - np.median(w)).max())


def read_points(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- scenes


def test_gray_scene_shape_dtype_and_brightness():
    img, defects = scene(0)
    assert img.shape == (H, W) and img.dtype == np.uint8
    assert 110 <= img.mean() <= 160
    assert len(defects) == 3
    assert all(isinstance(d, SyntheticDefect) and d.kind in DEFECT_KINDS for d in defects)
    assert all(isinstance(d.x, int) and isinstance(d.y, int) for d in defects)


def test_color_scene_is_hxwx3_with_the_same_layout():
    gray, gd = scene(5, defects=4)
    rgb, cd = scene(5, defects=4, color=True)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert cd == gd  # color does not change the random draws
    lum = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32)
    assert np.abs(lum - gray).mean() < 1.5


def test_same_generator_state_gives_identical_scene():
    a, da = scene(11)
    b, db = scene(11)
    c, dc = scene(12)
    assert np.array_equal(a, b) and da == db
    assert not np.array_equal(a, c) and da != dc


def test_background_is_identical_away_from_defects():
    with_d, defects = scene(3, defects=3)
    clean, none = scene(3, defects=0)
    assert none == []
    yy, xx = np.mgrid[0:H, 0:W]
    far = np.ones((H, W), dtype=bool)
    for d in defects:
        far &= (xx - d.x) ** 2 + (yy - d.y) ** 2 > 45 ** 2  # beyond any dent radius / scratch half length
    assert far.sum() > 0.5 * H * W
    assert np.array_equal(with_d[far], clean[far])


@pytest.mark.parametrize("seed", range(8))
def test_defects_inside_margin_and_separated(seed):
    margin, sep = 20, 90
    _, defects = scene(seed, defects=4, margin=margin, min_separation=sep)
    assert len(defects) == 4
    for d in defects:
        assert margin <= d.x < W - margin and margin <= d.y < H - margin
        if d.kind == "dent":  # radius >= 10 px must fit too
            assert margin + 10 <= d.x < W - margin - 10 and margin + 10 <= d.y < H - margin - 10
    for a, b in itertools.combinations(defects, 2):
        assert math.hypot(a.x - b.x, a.y - b.y) >= sep


def test_large_margin_keeps_centers_in_the_middle():
    _, defects = scene(2, defects=2, margin=100, min_separation=40)
    for d in defects:
        assert 100 < d.x < W - 101 and 100 < d.y < H - 101


def test_impossible_layout_raises_clear_error():
    with pytest.raises(ValueError, match="could not place 12 defects at least 300 px apart"):
        scene(0, defects=12, min_separation=300)
    with pytest.raises(ValueError, match="too small"):
        scene(0, width=40, height=40, defects=1)
    with pytest.raises(ValueError, match="defects must be >= 0"):
        scene(0, defects=-1)


def test_each_defect_is_clearly_visible_against_the_same_scene_without_it():
    seen = set()
    for seed in range(10):
        with_d, defects = scene(seed, defects=3)
        clean, _ = scene(seed, defects=0)  # same background, no defects
        diff = with_d.astype(np.float32) - clean
        for d in defects:
            seen.add(d.kind)
            w32 = window(diff, d.x, d.y, 16)
            # contrast of the defect itself: at least 35 gray levels, with room to spare
            assert w32.max() - w32.min() >= 45, (seed, d)
            if d.kind == "dent":
                # a dent (radius >= 10) changes the 16x16 core and the 32x32 window a lot
                assert np.abs(window(diff, d.x, d.y, 8)).mean() > 8, (seed, d)
                assert np.abs(w32).mean() > 4, (seed, d)
            else:
                # a scratch is a thin line: >= 20 pixels change by >= 30 gray levels
                assert (np.abs(w32) >= 30).sum() >= 20, (seed, d)
    assert seen == set(DEFECT_KINDS)


def test_defect_patches_separable_from_far_background_patches():
    """A 64x64 patch on a defect vs. random 64x64 patches far from defects: a single simple
    feature (largest deviation from the patch median) separates them with a margin."""
    on, off = [], []
    for seed in range(12):
        img, defects = scene(seed, defects=3)
        on += [local_contrast(window(img, d.x, d.y, 32)) for d in defects]
        rng = np.random.default_rng(1000 + seed)
        for _ in range(15):
            x, y = int(rng.integers(32, W - 32)), int(rng.integers(32, H - 32))
            if all(math.hypot(x - d.x, y - d.y) > 100 for d in defects):
                off.append(local_contrast(window(img, x, y, 32)))
    assert len(on) == 36 and len(off) > 60
    assert min(on) > max(off) + 5, (min(on), max(off))


# --------------------------------------------------------------------------- folders


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


SMALL = dict(n_images=4, width=320, height=240, defects_per_image=(1, 3), clean_images=2)


def test_write_is_byte_identical_for_a_seed_and_differs_across_seeds(tmp_path):
    a = write_synthetic_surfaces(tmp_path / "a", seed=7, **SMALL)
    b = write_synthetic_surfaces(tmp_path / "b", seed=7, **SMALL)
    c = write_synthetic_surfaces(tmp_path / "c", seed=8, **SMALL)
    fa, fb, fc = folder_bytes(a.parent), folder_bytes(b.parent), folder_bytes(c.parent)
    pngs = [f"synthetic_surface_{i:04d}.png" for i in range(6)]
    assert sorted(fa) == sorted(pngs + ["points.csv", "SYNTHETIC.txt"])
    assert fa == fb
    assert a.name == "points.csv"
    assert fa["points.csv"] != fc["points.csv"]
    assert all(fa[p] != fc[p] for p in pngs)


def test_points_csv_rows_match_images(tmp_path):
    points = write_synthetic_surfaces(tmp_path, seed=3, n_images=5, width=320, height=240,
                                      defects_per_image=(2, 2))
    text = points.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "image,x,y,label"
    rows = read_points(points)
    assert len(rows) == 10  # exactly 2 per image
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    assert sorted(by_image) == [f"synthetic_surface_{i:04d}.png" for i in range(5)]
    for name, rs in by_image.items():
        img = np.asarray(Image.open(tmp_path / name))
        assert img.shape == (240, 320)
        for r in rs:
            x, y = int(r["x"]), int(r["y"])
            assert 0 <= x < 320 and 0 <= y < 240
            assert r["label"] in DEFECT_KINDS
            # the point really marks something: strong local contrast around it
            assert local_contrast(window(img, x, y, 32)) > 35, (name, r)
        (a, b) = [(int(r["x"]), int(r["y"])) for r in rs]
        assert math.hypot(a[0] - b[0], a[1] - b[1]) >= 80  # default min_separation


def test_defect_count_follows_defects_per_image(tmp_path):
    points = write_synthetic_surfaces(tmp_path, seed=0, n_images=10, width=320, height=240,
                                      defects_per_image=(1, 3))
    counts = {}
    for r in read_points(points):
        counts[r["image"]] = counts.get(r["image"], 0) + 1
    assert len(counts) == 10
    assert set(counts.values()) <= {1, 2, 3}
    assert len(set(counts.values())) > 1  # the count actually varies


def test_clean_images_have_no_rows_and_no_defect(tmp_path):
    points = write_synthetic_surfaces(tmp_path, seed=4, n_images=2, width=320, height=240,
                                      clean_images=3)
    rows = read_points(points)
    named = {r["image"] for r in rows}
    clean = [f"synthetic_surface_{i:04d}.png" for i in (2, 3, 4)]
    assert named == {"synthetic_surface_0000.png", "synthetic_surface_0001.png"}
    for name in clean:
        img = np.asarray(Image.open(tmp_path / name))
        assert img.shape == (240, 320)
        grid = [local_contrast(window(img, x, y, 32)) for x in range(32, 320 - 31, 32) for y in range(32, 240 - 31, 32)]
        assert max(grid) < 35, name  # nothing stands out anywhere


def test_marker_file_says_synthetic(tmp_path):
    write_synthetic_surfaces(tmp_path, seed=1, n_images=1, width=200, height=200, defects_per_image=(1, 1))
    text = (tmp_path / "SYNTHETIC.txt").read_text(encoding="utf-8")
    assert text.startswith("SYNTHETIC DATA")
    assert "generated" in text and "seed: 1" in text


def test_color_images_are_rgb_pngs(tmp_path):
    write_synthetic_surfaces(tmp_path, seed=2, n_images=1, width=200, height=160,
                             defects_per_image=(1, 1), color=True)
    img = Image.open(tmp_path / "synthetic_surface_0000.png")
    assert img.mode == "RGB" and img.size == (200, 160)


def test_rewrite_with_fewer_images_removes_stale_ones(tmp_path):
    write_synthetic_surfaces(tmp_path, seed=0, n_images=4, width=160, height=160, defects_per_image=(1, 1))
    (tmp_path / "notes.txt").write_text("keep me")
    write_synthetic_surfaces(tmp_path, seed=0, n_images=2, width=160, height=160, defects_per_image=(1, 1))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["synthetic_surface_0000.png",
                                                              "synthetic_surface_0001.png"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="defects_per_image"):
        write_synthetic_surfaces(tmp_path, defects_per_image=(3, 1))
    with pytest.raises(ValueError, match="n_images"):
        write_synthetic_surfaces(tmp_path, n_images=-1)


def test_points_csv_parses_with_the_project_label_parser(tmp_path):
    from defect_assets.ml.labels import parse_points_csv

    points = write_synthetic_surfaces(tmp_path, seed=5, n_images=3, width=320, height=240)
    df = parse_points_csv(points.read_text(encoding="utf-8"))
    assert len(df) == len(read_points(points))
    assert set(df["kind"]) == {"point"}
    assert set(df["label"]) <= set(DEFECT_KINDS)
