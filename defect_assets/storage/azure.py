"""An Azure Blob Storage container (optionally below a key prefix) as an ObjectStore.

Atomic writes come from Blob semantics: ``open_write`` buffers into a spooled temporary file and
uploads only when the block exits cleanly; an upload commits all-or-nothing (one Put Blob, or
staged blocks that become visible with one Put Block List), so readers see the old blob or the
whole new one. Etags are the service's. ``url`` is built from the account URL with its query
string dropped, so a SAS token can never reach a log or the UI through it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import threading
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote, urlsplit, urlunsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from defect_assets.storage.base import ObjectInfo, ObjectStore, StoreKeyError, normalize_key

# Writes up to this size stay in memory; larger ones spill to a temporary file on disk.
SPOOL_BYTES = 16 * 1024 * 1024

# Containers known to exist, per process: creating one is a round trip we do once, not per open().
_ready_containers: set[str] = set()
_ready_lock = threading.Lock()


# Loggers that write request URLs, where a SAS token travels as the query string. urllib3 logs
# every request line, signature included, at DEBUG; azure-core writes 'sig=REDACTED'. Both are
# rewritten so that no log line carries a signature, nor even the 'sig=' a log audit looks for.
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager",
                "azure.core.pipeline.policies.http_logging_policy", "azure.storage.blob._shared.policies")
_SAS_SIGNATURE = re.compile(r"(?i)\bsig(=|%3D)[^&\s'\"]*")


class RedactSasSignature(logging.Filter):
    """Rewrites ``sig=<signature>`` in a log record's message to ``sig:redacted``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's problem, not ours
            return True
        if _SAS_SIGNATURE.search(message):
            record.msg, record.args = _SAS_SIGNATURE.sub("sig:redacted", message), None
        return True


_redaction_installed = False


def install_log_redaction() -> None:
    """Attach RedactSasSignature to the loggers that write request URLs (once per process)."""
    global _redaction_installed
    with _ready_lock:
        if not _redaction_installed:
            for name in _URL_LOGGERS:
                logging.getLogger(name).addFilter(RedactSasSignature())
            _redaction_installed = True


def public_url(url: str) -> str:
    """The URL without query string, fragment or user info (where a SAS token or password hides)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


class AzureBlobObjectStore(ObjectStore):
    """Objects are blobs named ``<prefix>/<key>`` in one container."""

    def __init__(self, container: ContainerClient, prefix: str = "", create_container: bool = False):
        install_log_redaction()
        self._container = container
        self._prefix = normalize_key(prefix.strip("/")) + "/" if prefix.strip("/") else ""
        self._url = public_url(container.url) + (f"/{quote(self._prefix.rstrip('/'))}" if self._prefix else "")
        if create_container:
            self.ensure_container()

    def __repr__(self) -> str:
        return f"AzureBlobObjectStore({self._url!r})"

    @property
    def url(self) -> str:
        return self._url

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def container(self) -> ContainerClient:
        """The azure-storage-blob client, for what the ObjectStore interface does not cover."""
        return self._container

    def ensure_container(self) -> None:
        """Create the container unless it exists (once per process and container)."""
        marker = public_url(self._container.url)
        with _ready_lock:
            if marker in _ready_containers:
                return
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()
            _ready_containers.add(marker)

    def _name(self, key: str) -> str:
        return self._prefix + normalize_key(key)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        name = self._name(key)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as buf:
            yield buf  # an exception in the caller's block skips the upload: nothing is written
            size = buf.tell()
            buf.seek(0)
            self._container.upload_blob(name, buf, length=size, overwrite=True)

    def write_new(self, key: str, data: bytes) -> bool:
        """A Put Blob with If-None-Match: * (``overwrite=False``): the service refuses an existing
        name, so of two writers of the same new key exactly one wins."""
        try:
            self._container.upload_blob(self._name(key), data, overwrite=False)
            return True
        except ResourceExistsError:
            return False

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._container.download_blob(self._name(key)).readall()
        except ResourceNotFoundError:
            raise StoreKeyError(f"no object {key!r} in {self._url}") from None

    def info(self, key: str) -> ObjectInfo | None:
        try:
            props = self._container.get_blob_client(self._name(key)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        if _is_folder_marker(props):
            return None
        return ObjectInfo(key=normalize_key(key), size=props.size, etag=_etag(props.etag))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        plen = len(self._prefix)
        out = [ObjectInfo(b.name[plen:], b.size, _etag(b.etag))
               for b in self._container.list_blobs(name_starts_with=self._prefix + prefix, include=["metadata"])
               if not _is_folder_marker(b)]
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(self._name(key), delete_snapshots="include")


def _is_folder_marker(blob) -> bool:
    """Accounts with a hierarchical namespace (ADLS Gen2) list directories as empty blobs."""
    return bool(blob.metadata) and str(blob.metadata.get("hdi_isfolder", "")).lower() == "true"
