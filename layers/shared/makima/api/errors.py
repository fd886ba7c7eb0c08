"""The one place that turns errors into HTTP responses: ``{"error": {code, message, details}}``.

Nothing reaches a client as a traceback: unexpected exceptions are logged and answered with a bare
500 ``INTERNAL_ERROR``; bad input is 400/422 with the field that was wrong.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from makima.errors import MakimaError

log = logging.getLogger("makima.api")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, "details": details or {}}}
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: pydantic's "input"/"ctx" may hold values that are not JSON.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]


async def _makima_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MakimaError)
    response = error_response(exc.status, exc.code, exc.message, exc.details)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, exc.retry_after))
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return error_response(400, "BAD_REQUEST", "request body is not valid JSON", {"errors": errors})
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(p for p in first["loc"] if p != "body") or "request"
    return error_response(422, "INVALID_REQUEST", f"{where}: {first['msg']}", {"errors": errors})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.lower().replace("_", " ")
    return error_response(exc.status_code, code, message)


async def _bad_data(_: Request, exc: Exception) -> JSONResponse:
    # A value PostgreSQL cannot store (out of range, bad encoding) that validation let through.
    return error_response(400, "BAD_REQUEST", "a value in the request cannot be stored", {"reason": type(exc).__name__})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "INTERNAL_ERROR", "internal error; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(MakimaError, _makima_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.DataError, _bad_data)
    app.add_exception_handler(Exception, _unexpected)
