"""A small client for the scoring service, standard library only (urllib + a multipart body):

    client = DefectClient("http://127.0.0.1:8000", api_key=None)
    client.predict(["a.png", "b.png"])   # one result per image, each naming its model version
    client.inspect("photo.png")          # heatmap PNG (base64) + located defects
    client.model(); client.ready()

Errors from the service raise ServiceError with its status and JSON ``error`` / ``detail``; a
service that cannot be reached raises ServiceError with status 0.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

from defect_assets.serving.settings import API_KEY_HEADER, DEFAULT_URL, ClientSettings
from defect_assets.storage.settings import secret_value

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
                 ".tif": "image/tiff", ".tiff": "image/tiff"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServiceError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{status} {error}: {detail}" if status else f"{error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def multipart(field: str, files: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data upload of (filename, bytes, type) files."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, data, ctype in files:
        safe = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{safe}\"\r\n"
                   f"Content-Type: {ctype}\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def as_file(image, index: int) -> tuple[str, bytes, str]:
    """A path or raw bytes -> (filename, bytes, content type)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"image-{index}", bytes(image), "application/octet-stream"
    path = Path(image)
    return path.name, path.read_bytes(), CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


class DefectClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        self.url = (url or ClientSettings.load().service_url or DEFAULT_URL).rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # a proxy from the environment must not intercept a service on this machine
        handlers = [urllib.request.ProxyHandler({})] if host in LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # never shows the key
        return f"DefectClient({self.url!r}, api_key={'set' if self._api_key else None})"

    @classmethod
    def from_env(cls, url: str | None = None) -> DefectClient:
        return cls(url, secret_value(ClientSettings.load().api_key) or None)

    def _call(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
              query: dict | None = None) -> tuple[int, dict]:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        if self._api_key:
            req.add_header(API_KEY_HEADER, self._api_key)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {"error": "http_error", "detail": raw[:200].decode("utf-8", "replace")}
            return e.code, doc
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServiceError(0, "unreachable", f"no answer from {self.url} ({reason})") from None

    def _ok(self, method: str, path: str, **kw) -> dict:
        status, doc = self._call(method, path, **kw)
        if status >= 400:
            raise ServiceError(status, str(doc.get("error", "error")), str(doc.get("detail", doc)))
        return doc

    def predict(self, images: Iterable, per_request: int = 64) -> list[dict]:
        """Score images (paths or bytes); one result per image, in order, each with
        probabilities, decision, defect_score, sha256 and model_version."""
        files = [as_file(im, i) for i, im in enumerate(images)]
        results = []
        for lo in range(0, len(files), per_request):
            body, ctype = multipart("files", files[lo:lo + per_request])
            results += self._ok("POST", "/v1/predict", body=body, ctype=ctype)["results"]
        return results

    def inspect(self, image, stride: int | None = None, threshold: float | None = None,
                min_distance: float | None = None, heatmap: bool = True) -> dict:
        body, ctype = multipart("file", [as_file(image, 0)])
        query = {k: v for k, v in (("stride", stride), ("threshold", threshold), ("min_distance", min_distance))
                 if v is not None}
        query["heatmap"] = "true" if heatmap else "false"
        return self._ok("POST", "/v1/inspect", body=body, ctype=ctype, query=query)

    def model(self) -> dict:
        return self._ok("GET", "/v1/model")

    def ready(self) -> bool:
        try:
            return self._call("GET", "/readyz")[0] == 200
        except ServiceError:
            return False

    def health(self) -> bool:
        try:
            return self._call("GET", "/healthz")[0] == 200
        except ServiceError:
            return False


DEFECT_MARK = "*"
"""Marks a decision that is a defect (a multi-class model's decision is a class name, so the name alone
may not say it)."""


def format_table(results: list[dict], names: list[str] | None = None) -> str:
    """A readable table of predict results, then (after a blank line) what its marks and columns mean."""
    rows = [("image", "decision", "p(defect)", "model version", "sha256")]
    for i, r in enumerate(results):
        name = names[i] if names else (r.get("filename") or f"image {i}")
        rows.append((name, r["decision"] + (f" {DEFECT_MARK}" if r["is_defect"] else ""), f"{r['defect_score']:.4f}",
                     r["model_version"], r["sha256"][:12]))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    legend = ([f"{DEFECT_MARK} = a defect (for a two-class model: p(defect) reached the served model's threshold)"]
              if any(r["is_defect"] for r in results) else [])
    legend.append("p(defect): the model's defect probability; sha256: the first 12 hex digits of the image's hash")
    return "\n".join([*lines, "", *legend])
