"""The scoring service's settings: ``ServiceSettings``, one field per setting, each read from its
environment variable (``DEFECT_ASSETS_`` + the field's name in capitals, unless the field names
another; the table in docs/settings.md is generated from this class). All are optional.

The artifact store (where the model registry lives) is the one ``defect_assets.storage.env``
chooses: ``DEFECT_ASSETS_STORAGE``, ``DEFECT_ASSETS_DATA_DIR`` and the Azure variables
(``storage.settings.StorageSettings``). The API key and the labeler tokens are ``SecretStr``:
never in a repr, a log line or an error message.

``ClientSettings``: where a client (``defect-assets score``, the deployment asset) finds the
service and the key it sends.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

from defect_assets.storage.base import ObjectStore
from defect_assets.storage.env import open_store
from defect_assets.storage.settings import EnvSettings, Flag, Float, Int, env, secret_value

API_KEY_HEADER = "X-API-Key"
LABELER_TOKENS_ENV = "DEFECT_ASSETS_LABELER_TOKENS"
DEFAULT_MARK_CLASSES = ("defect", "dent", "scratch")
LABELER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_TOKEN_CHARS = 12
DEFAULT_URL = "http://127.0.0.1:8000"


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return None if isinstance(value, str) and not value.strip() else value


def _labelers(value: Any) -> Any:
    return parse_labelers(value) if isinstance(value, str) else value


def _mark_classes(value: Any) -> Any:
    return parse_mark_classes(value) if isinstance(value, str) else value


Key = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]
Labelers = Annotated[tuple[tuple[str, SecretStr], ...], BeforeValidator(_labelers),
                     AfterValidator(lambda v: check_labelers(v))]
MarkClasses = Annotated[tuple[str, ...], BeforeValidator(_mark_classes)]


class ServiceSettings(EnvSettings):
    """Settings of the scoring service (``defect-assets serve``)."""

    store: ObjectStore = Field(json_schema_extra=env(None))
    """The artifact store holding the model registry and its production pointer."""
    api_key: Key = Field(None, repr=False)
    """The key clients send as `X-API-Key` (unset: every route is open, as on a laptop on 127.0.0.1)."""
    predict_requires_key: Flag = True
    """`0`: /v1/predict is public even when a key is set (model, inspect stay protected)."""
    max_upload_bytes: Int = Field(20 * 1024 * 1024, ge=1)
    """Request body cap in bytes (20 MiB); larger uploads get 413 before they are read."""
    max_pixels: Int = Field(25_000_000, ge=1)
    """Pixel cap per image: decompression bombs are refused before decoding."""
    max_images: Int = Field(64, ge=1)
    """Images per /v1/predict request."""
    max_windows: Int = Field(20_000, ge=1)
    """Sliding windows per /v1/inspect request (beyond it: use a larger stride)."""
    max_work_gmac: Float = Field(2_000.0, gt=0)
    """Work budget of one heavy request (inspect, the annotation view's suggestions, the labeling heatmap) in 10^9
    multiply-adds: windows x the model's cost per window; over it: 422 with the stride that fits."""
    max_heavy_requests: Int = Field(1, ge=1)
    """Heavy requests scored at once; one more gets 429 with `Retry-After`."""
    heavy_deadline_seconds: Float = Field(60.0, ge=0)
    """A heavy request still scoring after this many seconds is stopped with 503."""
    max_batch: Int = Field(16, ge=1)
    """Micro-batching: most patches in one model call."""
    max_wait_ms: Float = Field(5.0, ge=0)
    """Micro-batching: a batch goes to the model when full or when its oldest request waited this many ms."""
    runtime: Literal["tensorflow", "onnxruntime", "openvino"] = "tensorflow"
    """What runs the model: `tensorflow` (the registered artifact through the one scorer, Lite0 features on ONNX Runtime
    as in training) or `onnxruntime` / `openvino` (the model exported as one graph, the parity-checked bundle)."""
    reload_seconds: Float = Field(5.0, gt=0)
    """How often (seconds) the production pointer is polled for a new model."""
    body_timeout_seconds: float = Field(30.0, json_schema_extra=env(None))
    """An upload whose next bytes take longer than this to arrive is answered with 408."""
    request_timeout_seconds: float = Field(120.0, json_schema_extra=env(None))
    """A scoring future that takes longer than this is answered with 503 (never a hang)."""
    prediction_log: Flag = True
    """`0`: keep no prediction log (nothing for prediction monitoring to read)."""
    prediction_log_flush_seconds: Float = Field(1.0, gt=0)
    """How often (seconds) the buffered prediction log is written (a crash loses at most this much)."""
    dashboard_requires_key: Flag = True
    """`0`: /dashboard is open even when a key is set (with a key, a browser asks for it: any user name, the key as
    password)."""
    freeze_gc: bool = Field(True, json_schema_extra=env(None))
    """Freeze the garbage collector's view after each model load (the service owns its process;
    an embedding process, such as a test run, may say False)."""
    labelers: Labelers = Field((), repr=False,
                               json_schema_extra={**env(LABELER_TOKENS_ENV), "kind": "`name:token,...`"})
    """Who may use the labeling page, as `name:token,name:token` (one token of at least 12 characters per labeler;
    the name is what each stored label records); unset: the labeling page answers 401 to everyone."""
    mark_classes: MarkClasses = Field(DEFAULT_MARK_CLASSES, json_schema_extra={"kind": "`name,...`"})
    """Classes of the points and boxes drawn in the annotation view (those a batch's own files use are added)."""

    dagster_ui_url: str | None = None
    """The Dagster UI's address (e.g. `http://127.0.0.1:3000`): when set, every page's navigation bar links to it."""
    label_show_guess: Flag = False
    """`1`: the labeling page shows the model's guess at once; default `0`: hidden until the labeler asks
    (a first pass not anchored on the model)."""

    def __init__(self, store: ObjectStore | None = None, **values: Any):
        super().__init__(**({"store": store} if store is not None else {}), **values)

    def protects(self, route: str) -> bool:
        """Whether a route needs the API key (health, readiness and the docs never do)."""
        if not self.api_key:
            return False
        if route == "dashboard":
            return self.dashboard_requires_key
        return self.predict_requires_key if route == "predict" else True

    def key_matches(self, key: str | None) -> bool:
        """Whether ``key`` is the API key (compare_digest on bytes: constant time, and no TypeError
        on non-ASCII input)."""
        return key is not None and hmac.compare_digest(key.encode(), secret_value(self.api_key).encode())

    def labeler_for(self, token: str | None) -> str | None:
        """The labeler whose token this is, or None. Every configured token is compared (in
        constant time), so the answer's timing says nothing about which one nearly matched."""
        found = None
        given = (token or "").encode()
        for name, secret in self.labelers:
            if hmac.compare_digest(given, secret.get_secret_value().encode()) and token:
                found = name
        return found

    @classmethod
    def from_env(cls, store: ObjectStore | None = None, environ: dict | None = None) -> ServiceSettings:
        """The settings from the environment (or ``environ``); ``store`` defaults to the configured
        artifact store."""
        return cls.load(environ, store=store if store is not None else open_store("artifacts"))


class ClientSettings(EnvSettings):
    """Where a client (``defect-assets score``, the deployment asset) finds the scoring service."""

    service_url: str = ""
    """The service's base URL, e.g. `http://127.0.0.1:8000` (unset: the CLI uses that; the deployment asset
    promotes without checking over HTTP)."""
    api_key: Key = Field(None, repr=False)
    """The key the client sends as `X-API-Key` (the service's own key)."""


API_KEY_ENV = ServiceSettings.env("api_key")
SERVICE_URL_ENV = ClientSettings.env("service_url")
MARK_CLASSES_ENV = ServiceSettings.env("mark_classes")


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


def check_labelers(labelers: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """The labelers as they are, or ValueError; a token may be a ``str`` or a ``SecretStr``."""
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
    if len({secret_value(t) if isinstance(t, SecretStr) else t for _, t in labelers}) != len(labelers):
        raise ValueError(f"{LABELER_TOKENS_ENV}: two labelers share a token (each token names one labeler)")
    return labelers
