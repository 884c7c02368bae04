"""The upload guard: ASGI middleware in front of the upload routes. It refuses a body that is
not multipart (415) or is larger than the cap (413), before reading it when Content-Length
says so, else as soon as the streamed bytes pass the cap; a body that stops arriving is
answered 408 (never a hang)."""

from __future__ import annotations

import asyncio

from defect_assets.serving.errors import error_response


class _Abort(Exception):
    pass


class UploadGuard:
    def __init__(self, app, paths: tuple[str, ...], max_bytes: int, body_timeout: float):
        self.app = app
        self.paths = paths
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope["headers"]}
        ctype = headers.get(b"content-type", b"").decode("latin-1").strip().lower()
        if not ctype.startswith("multipart/form-data"):
            shown = ctype.split(";")[0][:80] or "none"
            return await error_response(415, "unsupported_media_type",
                                        f"send the images as multipart/form-data, not {shown}")(scope, receive, send)
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > self.max_bytes:
            return await self._too_large(declared)(scope, receive, send)
        seen, abort, started = 0, None, False

        async def counted_receive():
            nonlocal seen, abort
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                abort = (408, "request_timeout", f"the upload stalled for {self.body_timeout:.0f}s")
                raise _Abort() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    abort = (413, "payload_too_large",
                             f"the upload is over the cap of {self.max_bytes:,} bytes (got at least {seen:,})")
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

    def _too_large(self, n: int):
        return error_response(413, "payload_too_large",
                              f"the upload is over the cap of {self.max_bytes:,} bytes (got at least {n:,})")
