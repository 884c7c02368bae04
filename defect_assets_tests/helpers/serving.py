"""The scoring service under test: a once-per-process template registry (tiny models), fresh copies of it,
the real app on uvicorn in a thread, and a raw HTTP request."""

from __future__ import annotations

import functools
import http.client
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from defect_assets.serving.client import DefectClient
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.waits import READY_SECONDS

API_KEY = "k3y-Only-The-Test-Knows-0f9a8b7c"


@functools.cache
def _template() -> tuple[Path, dict]:
    """Built once per test process: a registry with a trained tiny model A, an untrained B, a
    model whose artifact is not a Keras file (its hash is right) and the patches A learned from."""
    from defect_assets.pipeline.tiny import register_tiny_model, synthetic_patch_set
    from defect_assets.storage.formats import write_value

    root = Path(tempfile.mkdtemp(prefix="serving-template-"))
    store = LocalObjectStore(root / "artifacts")
    registry = ModelRegistry(store)
    patches = synthetic_patch_set(size=32, seed=0, store=store)
    a = register_tiny_model(registry, {"synthetic": patches}, epochs=3, seed=0)
    b = register_tiny_model(registry, {"synthetic": patches}, seed=1, train=False)
    base = {k: v for k, v in a.to_dict().items() if k not in ("version", "family", "created", "files")}
    garbage = registry.register("tiny_cnn", {"model.keras": b"PK\x03\x04 not really a keras archive"}, base)
    write_value(store, "labeled_patches/synthetic", patches)
    return root, {"a": a.version, "b": b.version, "garbage": garbage.version}


def model_registry(dest: Path) -> tuple[LocalObjectStore, ModelRegistry, dict]:
    """A fresh copy of the template under dest/artifacts (tests may corrupt or promote freely)."""
    root, versions = _template()
    shutil.copytree(root / "artifacts", dest / "artifacts")
    store = LocalObjectStore(dest / "artifacts")
    return store, ModelRegistry(store), versions


class ServiceThread:
    """The real app on uvicorn on 127.0.0.1 (a pre-bound free port), in a background thread."""

    def __init__(self, settings: ServiceSettings):
        import uvicorn

        from defect_assets.serving.app import create_app

        self.app = create_app(settings.with_(freeze_gc=False))  # the test process is not the service's own
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="info", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + READY_SECONDS
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def wait_ready(self, version: str | None = None, timeout: float = READY_SECONDS) -> dict:
        client = DefectClient(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, doc = client._call("GET", "/readyz")
            if status == 200 and (version is None or doc["model_version"] == version):
                return doc
            time.sleep(0.05)
        raise AssertionError(f"service not ready on {version}: {doc}")


def raw_request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()
