"""Azurite, the official Azure Storage emulator (npm package ``azurite``, pinned in package.json),
run as a real Blob endpoint on 127.0.0.1 for the tests. ``./run test`` installs it; without it
the Blob tests fail and say how to install it (CI must never skip them silently)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from defect_assets_tests.helpers.ports import free_port
from defect_assets_tests.waits import READY_SECONDS

REPO = Path(__file__).resolve().parent.parent
AZURITE_BLOB = REPO / "node_modules" / ".bin" / "azurite-blob"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteMissing(RuntimeError):
    pass


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@dataclass
class Azurite:
    """One running azurite-blob process."""

    process: subprocess.Popen
    port: int
    location: Path

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.account_url};")

    def service_client(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.account_url, credential=ACCOUNT_KEY)

    def stop(self, grace_seconds: float = 3.0) -> None:
        """SIGTERM, then SIGKILL: azurite-blob has been seen to ignore SIGTERM. Only its own pid."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_azurite(location: Path, timeout: float = READY_SECONDS) -> Azurite:
    if not os.access(AZURITE_BLOB, os.X_OK):
        raise AzuriteMissing(
            f"{AZURITE_BLOB} is missing: install Azurite with `npm install` in {REPO} "
            "(./run test does it; package.json pins azurite)")
    location.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(location / "azurite.log", "wb")  # noqa: SIM115 (the child keeps writing to it)
    proc = subprocess.Popen(
        [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location),
         "--skipApiVersionCheck", "--silent", "--disableTelemetry"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=location)
    log.close()
    server = Azurite(proc, port, location)
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            out = (location / "azurite.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"azurite-blob did not start on port {port} (exit {proc.returncode}):\n{out}")
        time.sleep(0.1)
    return server
