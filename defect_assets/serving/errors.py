"""Errors as the service answers them: JSON ``{"error", "detail"}`` with a status, for every
failure (a client's bad input is a 4xx, never a 5xx; an unexpected error is a 500 that says
where to look and nothing more)."""

from __future__ import annotations

import logging
import math
from http import HTTPStatus

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("defect_assets.serving")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def jsonable(value):
    """Values as strict JSON: NaN and infinities become null, NumPy scalars plain numbers."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes, dict, list, tuple)):
        value = value.item()  # a NumPy scalar (from a pandas table)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


async def _api_error(request, exc: ApiError):
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _invalid(request, exc: RequestValidationError):
    # loc + message only: never echo the submitted values
    detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                       for e in exc.errors())
    return error_response(422, "invalid_request", detail or "invalid request")


async def _http(request, exc: StarletteHTTPException):
    try:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        code = "http_error"
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def _unexpected(request, exc: Exception):
    log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error; the service log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
