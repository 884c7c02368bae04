"""Credentials never reach the access log: uvicorn logs every request line with its query string,
and a client that puts a token there (``?token=...``, ``?api_key=...``; the service refuses
tokens in query strings, but a log would still keep them) must not leave it in the log. The filter
rewrites the value of every query parameter whose name looks like a credential to ``[redacted]``."""

from __future__ import annotations

import logging
import re
import threading

_CREDENTIAL_PARAM = re.compile(
    r"([?&;])([^=&;\s\"]*(?:token|key|secret|passw|pwd|sig|session|auth|credential|cookie)[^=&;\s\"]*)=([^&;\s\"]*)",
    re.IGNORECASE)
ACCESS_LOGGERS = ("uvicorn.access",)
_installed = False
_lock = threading.Lock()


def redact_query(text: str) -> str:
    return _CREDENTIAL_PARAM.sub(r"\1\2=[redacted]", text)


class RedactQueryCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            # uvicorn's access record: (client, method, path with query, http version, status)
            record.args = (args[0], args[1], redact_query(args[2]), args[3], args[4])
        else:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is the logging module's problem
                return True
            if _CREDENTIAL_PARAM.search(message):
                record.msg, record.args = redact_query(message), None
        return True


def install_access_log_redaction() -> None:
    """Attach the filter to uvicorn's access logger (once per process)."""
    global _installed
    with _lock:
        if not _installed:
            for name in ACCESS_LOGGERS:
                logging.getLogger(name).addFilter(RedactQueryCredentials())
            _installed = True
