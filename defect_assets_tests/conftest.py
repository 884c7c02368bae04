"""Shared fixtures: temporary stores and small generated image batches (real PNG files)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from defect_assets.storage import LocalObjectStore  # noqa: E402

# The browser fixtures, registered once for every module: one Playwright (and one Chromium) per session
from defect_assets_tests.browser import browser, offline_page  # noqa: E402, F401


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, non-symmetric test picture (gradients + waves) so crops and rotations are checkable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a, b = rng.uniform(3, 9, 2)
    img = 110 + 60 * np.sin(xx / a) * np.cos(yy / b) + 0.15 * xx - 0.1 * yy
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def landing(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "landing")


@pytest.fixture
def artifacts(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "artifacts")


@pytest.fixture
def surface_folder(tmp_path):
    """A folder of 6 synthetic surface photos with points.csv (the dent workflow)."""
    from defect_assets.ml.synthetic import write_synthetic_surfaces

    folder = tmp_path / "surfaces"
    write_synthetic_surfaces(folder, n_images=6, seed=3, width=320, height=256, defects_per_image=(1, 3))
    return folder
