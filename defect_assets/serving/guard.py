"""The body guard: one ASGI middleware in front of every route that takes a body, with one
``BodyCap`` per group of routes (the uploads of /v1/predict and /v1/inspect, the labeling writes,
the annotation writes). A POST to a capped route is refused when its body is larger than the cap
(413), before it is read when Content-Length says so, else as soon as the streamed bytes pass the
cap (the app never sees the rest); an upload that is not multipart gets 415 and a body that
stops arriving is answered 408 (never a hang)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from defect_assets.serving.errors import error_response

UPLOAD_TOO_LARGE = "the upload is over the cap of {cap:,} bytes (got at least {seen:,})"
WRITE_TOO_LARGE = "a labeling request is at most {cap:,} bytes"


@dataclass(frozen=True)
class BodyCap:
    max_bytes: int
    paths: tuple[str, ...] = ()
    """Exact paths capped."""
    prefixes: tuple[str, ...] = ()
    """Path prefixes capped."""
    multipart: bool = False
    """Refuse (415) a body that is not multipart/form-data."""
    timeout: float | None = None
    """Seconds one chunk of the body may take to arrive (408 after); None: no limit."""
    too_large: str = UPLOAD_TOO_LARGE
    """The 413's detail, formatted with ``cap`` and ``seen`` (bytes)."""

    def covers(self, path: str) -> bool:
        return path in self.paths or path.startswith(self.prefixes)


class _Abort(Exception):
    pass


class BodyGuard:
    def __init__(self, app, caps: tuple[BodyCap, ...]):
        self.app = app
        self.caps = tuple(caps)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        cap = next((c for c in self.caps if c.covers(scope["path"])), None)
        if cap is None:
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope["headers"]}
        if cap.multipart:
            ctype = headers.get(b"content-type", b"").decode("latin-1").strip().lower()
            if not ctype.startswith("multipart/form-data"):
                shown = ctype.split(";")[0][:80] or "none"
                refusal = error_response(415, "unsupported_media_type",
                                         f"send the images as multipart/form-data, not {shown}")
                return await refusal(scope, receive, send)
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > cap.max_bytes:
            return await self._too_large(cap, declared)(scope, receive, send)
        seen, abort, started = 0, None, False

        async def counted_receive():
            nonlocal seen, abort
            try:
                async with asyncio.timeout(cap.timeout):
                    message = await receive()
            except TimeoutError:
                abort = (408, "request_timeout", f"the upload stalled for {cap.timeout:.0f}s")
                raise _Abort() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap.max_bytes:
                    abort = (413, "payload_too_large", cap.too_large.format(cap=cap.max_bytes, seen=seen))
                    raise _Abort()
            return message

        async def guarded_send(message):
            nonlocal started
            if abort:
                return  # the app's own reaction to the aborted body is replaced by the answer below
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not abort:
                raise
        if abort and not started:
            await error_response(*abort)(scope, receive, send)

    @staticmethod
    def _too_large(cap: BodyCap, n: int):
        return error_response(413, "payload_too_large", cap.too_large.format(cap=cap.max_bytes, seen=n))
