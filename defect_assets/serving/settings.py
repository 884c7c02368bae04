"""The scoring service's settings, read from environment variables (all optional):

- ``DEFECT_ASSETS_API_KEY`` (default: unset): the key clients send as ``X-API-Key``; unset:
  every route is open (a laptop on 127.0.0.1)
- ``DEFECT_ASSETS_PREDICT_REQUIRES_KEY`` (default: ``1``): ``0``: /v1/predict is public even when
  a key is set (model, inspect stay protected)
- ``DEFECT_ASSETS_MAX_UPLOAD_BYTES`` (default: 20 MiB): request body cap; larger uploads get 413
  before they are read
- ``DEFECT_ASSETS_MAX_PIXELS`` (default: 25,000,000): pixel cap per image (decompression bombs are
  refused before decoding)
- ``DEFECT_ASSETS_MAX_IMAGES`` (default: 64): images per /v1/predict request
- ``DEFECT_ASSETS_MAX_WINDOWS`` (default: 20,000): sliding windows per /v1/inspect request (use a
  larger stride beyond it)
- ``DEFECT_ASSETS_MAX_WORK_GMAC`` (default: 2,000): the work budget of one heavy request (sliding
  windows: /v1/inspect, the annotation view's suggestions, the labeling heatmap), in billions of
  multiply-adds: windows x the model's cost per window; over it: 422 with the stride that fits
- ``DEFECT_ASSETS_MAX_HEAVY_REQUESTS`` (default: 1): heavy requests scored at once; one more gets
  429 with ``Retry-After``
- ``DEFECT_ASSETS_HEAVY_DEADLINE_SECONDS`` (default: 60): a heavy request still scoring after this
  long is stopped with 503
- ``DEFECT_ASSETS_MAX_BATCH`` (default: 16): micro-batching: most patches in one model call
- ``DEFECT_ASSETS_MAX_WAIT_MS`` (default: 5): micro-batching: a batch goes to the model when full
  or when its oldest request waited this long
- ``DEFECT_ASSETS_RELOAD_SECONDS`` (default: 5): how often the production pointer is polled for a
  new model
- ``DEFECT_ASSETS_LABELER_TOKENS`` (default: unset): who may use the labeling page, as
  ``name:token,name:token`` (one token per labeler, at least 12 characters; the name is what
  each stored label records as its labeler); unset: the labeling page answers 401 to everyone
- ``DEFECT_ASSETS_MARK_CLASSES`` (default: ``defect,dent,scratch``): the classes of points and
  boxes drawn in the annotation view (the point/box classes a batch's own files use are added)
- ``DEFECT_ASSETS_PREDICTION_LOG`` (default: ``1``): ``0``: keep no prediction log (nothing for
  prediction monitoring to read)
- ``DEFECT_ASSETS_PREDICTION_LOG_FLUSH_SECONDS`` (default: 1): how often the buffered prediction
  log is written (a crash loses at most this much)
- ``DEFECT_ASSETS_DASHBOARD_REQUIRES_KEY`` (default: ``1``): ``0``: /dashboard is open even when a
  key is set (with a key, a browser asks for it: any user name, the key as password)

The artifact store (where the model registry lives) is the one ``defect_assets.storage.env``
chooses: ``DEFECT_ASSETS_STORAGE``, ``DEFECT_ASSETS_DATA_DIR`` and the Azure variables. The
API key and the labeler tokens are never printed: they are left out of the repr.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, field, fields, replace

from defect_assets.storage.base import ObjectStore
from defect_assets.storage.env import env_flag, env_number, open_store

API_KEY_ENV = "DEFECT_ASSETS_API_KEY"
API_KEY_HEADER = "X-API-Key"
SERVICE_URL_ENV = "DEFECT_ASSETS_SERVICE_URL"
LABELER_TOKENS_ENV = "DEFECT_ASSETS_LABELER_TOKENS"
MARK_CLASSES_ENV = "DEFECT_ASSETS_MARK_CLASSES"
DEFAULT_MARK_CLASSES = ("defect", "dent", "scratch")
LABELER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_TOKEN_CHARS = 12
DEFAULT_URL = "http://127.0.0.1:8000"

_ENV = {
    "predict_requires_key": "DEFECT_ASSETS_PREDICT_REQUIRES_KEY",
    "max_upload_bytes": "DEFECT_ASSETS_MAX_UPLOAD_BYTES",
    "max_pixels": "DEFECT_ASSETS_MAX_PIXELS",
    "max_images": "DEFECT_ASSETS_MAX_IMAGES",
    "max_windows": "DEFECT_ASSETS_MAX_WINDOWS",
    "max_work_gmac": "DEFECT_ASSETS_MAX_WORK_GMAC",
    "max_heavy_requests": "DEFECT_ASSETS_MAX_HEAVY_REQUESTS",
    "heavy_deadline_seconds": "DEFECT_ASSETS_HEAVY_DEADLINE_SECONDS",
    "max_batch": "DEFECT_ASSETS_MAX_BATCH",
    "max_wait_ms": "DEFECT_ASSETS_MAX_WAIT_MS",
    "reload_seconds": "DEFECT_ASSETS_RELOAD_SECONDS",
    "prediction_log": "DEFECT_ASSETS_PREDICTION_LOG",
    "prediction_log_flush_seconds": "DEFECT_ASSETS_PREDICTION_LOG_FLUSH_SECONDS",
    "dashboard_requires_key": "DEFECT_ASSETS_DASHBOARD_REQUIRES_KEY",
}


@dataclass(frozen=True)
class ServiceSettings:
    store: ObjectStore
    """The artifact store holding the model registry and its production pointer."""
    api_key: str | None = field(default=None, repr=False)
    predict_requires_key: bool = True
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_images: int = 64
    max_windows: int = 20_000
    max_work_gmac: float = 2_000.0
    """Work budget of one heavy request: windows x model multiply-adds per window, in 10^9."""
    max_heavy_requests: int = 1
    """Heavy requests (many windows of one photo) scored at once; the next gets 429."""
    heavy_deadline_seconds: float = 60.0
    """A heavy request still scoring after this long is stopped (503)."""
    max_batch: int = 16
    max_wait_ms: float = 5.0
    reload_seconds: float = 5.0
    body_timeout_seconds: float = 30.0
    """An upload whose next bytes take longer than this to arrive is answered with 408."""
    request_timeout_seconds: float = 120.0
    """A scoring future that takes longer than this is answered with 503 (never a hang)."""
    prediction_log: bool = True
    """Append one record per scored image to the artifact store's prediction log."""
    prediction_log_flush_seconds: float = 1.0
    dashboard_requires_key: bool = True
    freeze_gc: bool = True
    """Freeze the garbage collector's view after each model load (the service owns its process;
    an embedding process, such as a test run, may say False)."""
    labelers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(name, token) of everyone who may use the labeling page; empty: nobody."""
    mark_classes: tuple[str, ...] = DEFAULT_MARK_CLASSES
    """Classes of the points and boxes drawn in the annotation view."""

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_pixels", "max_images", "max_windows", "max_batch",
                     "max_heavy_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_work_gmac <= 0 or self.heavy_deadline_seconds < 0:
            raise ValueError("max_work_gmac must be > 0 and heavy_deadline_seconds >= 0")
        if self.max_wait_ms < 0 or self.reload_seconds <= 0 or self.prediction_log_flush_seconds <= 0:
            raise ValueError("max_wait_ms must be >= 0, reload_seconds and prediction_log_flush_seconds > 0")
        if self.api_key is not None and not self.api_key.strip():
            object.__setattr__(self, "api_key", None)
        check_labelers(self.labelers)

    def protects(self, route: str) -> bool:
        """Whether a route needs the API key (health, readiness and the docs never do)."""
        if not self.api_key:
            return False
        if route == "dashboard":
            return self.dashboard_requires_key
        return self.predict_requires_key if route == "predict" else True

    def labeler_for(self, token: str | None) -> str | None:
        """The labeler whose token this is, or None. Every configured token is compared (in
        constant time), so the answer's timing says nothing about which one nearly matched."""
        found = None
        given = (token or "").encode()
        for name, secret in self.labelers:
            if hmac.compare_digest(given, secret.encode()) and token:
                found = name
        return found

    def with_(self, **changes) -> ServiceSettings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, store: ObjectStore | None = None, environ: dict | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        kinds = {f.name: f.type for f in fields(cls)}
        values = {}
        for name, var in _ENV.items():
            if not env.get(var, "").strip():
                continue
            kind = kinds[name]
            if kind == "bool":
                values[name] = env_flag(var, True, env)
            else:
                values[name] = env_number(var, 0, int if kind == "int" else float, float("-inf"), environ=env)
        return cls(store=store if store is not None else open_store("artifacts"),
                   api_key=env.get(API_KEY_ENV) or None, labelers=parse_labelers(env.get(LABELER_TOKENS_ENV, "")),
                   mark_classes=parse_mark_classes(env.get(MARK_CLASSES_ENV, "")), **values)


def parse_mark_classes(text: str) -> tuple[str, ...]:
    """``dent,scratch`` -> ("dent", "scratch"); empty: the default classes."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if not LABELER_NAME_RE.match(n)]
    if bad:
        raise ValueError(f"{MARK_CLASSES_ENV}: class names are letters, digits and ._@- (not {bad[:3]})")
    return names or DEFAULT_MARK_CLASSES


def parse_labelers(text: str) -> tuple[tuple[str, str], ...]:
    """``name:token,name:token`` -> ((name, token), ...). Errors name the variable and the
    labeler, never a token."""
    out = []
    for i, entry in enumerate(p.strip() for p in text.split(",")):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        if not sep:
            raise ValueError(f"{LABELER_TOKENS_ENV}: entry {i + 1} is not name:token")
        out.append((name.strip(), token.strip()))
    return check_labelers(tuple(out))


def check_labelers(labelers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    names = [n for n, _ in labelers]
    for name, token in labelers:
        if not LABELER_NAME_RE.match(name):
            raise ValueError(f"{LABELER_TOKENS_ENV}: labeler name {name[:64]!r} must be 1-64 letters, digits, "
                             "'.', '_', '@' or '-'")
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"{LABELER_TOKENS_ENV}: the token of {name} is shorter than {MIN_TOKEN_CHARS} "
                             "characters")
    if len(set(names)) != len(names):
        raise ValueError(f"{LABELER_TOKENS_ENV}: a labeler is named twice")
    if len({t for _, t in labelers}) != len(labelers):
        raise ValueError(f"{LABELER_TOKENS_ENV}: two labelers share a token (each token names one labeler)")
    return labelers
