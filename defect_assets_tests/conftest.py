"""Shared fixtures: temporary stores and small generated image batches (real PNG files)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# the shared helpers assert like the tests do: rewrite them as pytest rewrites test modules (they lived in them)
pytest.register_assert_rewrite("defect_assets_tests.helpers")

from defect_assets.storage import LocalObjectStore  # noqa: E402


def _import_anyio_eagerly() -> None:
    """Resolve anyio's lazily imported submodules here, in the main thread, before any server thread.

    anyio (4.16) imports its submodules on first attribute access, so Starlette's first file
    response (`anyio.open_file`) imports `anyio._core._fileio` inside the uvicorn thread. Under
    pytest that import is assertion-rewritten (anyio ships a pytest plugin, and pytest rewrites the
    packages of its plugins), i.e. `ast.parse` runs in a server thread while another thread may be
    parsing too; CPython 3.11 shares the AST constructor's recursion counter between threads and
    can raise `SystemError: AST constructor recursion depth mismatch` (python/cpython#106905). It
    broke one dashboard request in CI. Outside pytest nothing is rewritten, so the service needs no
    such step.
    """
    import importlib

    import anyio
    import anyio.abc

    for module in (anyio, anyio.abc):
        for name in dir(module):
            getattr(module, name)
    importlib.import_module("anyio._backends._asyncio")  # what the event loop thread loads on first use


_import_anyio_eagerly()

# The browser fixtures, registered once for every module: one Playwright (and one Chromium) per module
from defect_assets_tests.browser import browser, offline_page  # noqa: E402, F401

# Fixtures that start something outside the test process: a test using one is a `services` test (as are the
# tests marked by hand: real daemons, Dask clusters, PostgreSQL, dagster-webserver, the main-job CLI)
SERVICE_FIXTURES = frozenset({"browser", "offline_page", "azurite"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


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
