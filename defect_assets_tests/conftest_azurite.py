"""The session-scoped ``azurite`` fixture: a real Azurite Blob endpoint on a free local port.

It FAILS (never skips) when Azurite is not installed: CI installs it through ./run test."""

from __future__ import annotations

import pytest

from defect_assets_tests.azurite import Azurite, AzuriteMissing, start_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Azurite:
    try:
        server = start_azurite(tmp_path_factory.mktemp("azurite"))
    except AzuriteMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
