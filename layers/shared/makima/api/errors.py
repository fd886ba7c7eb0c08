"""The one place that turns errors into HTTP responses: ``{"error": {code, message, details}}``.

Nothing reaches a client as a traceback: unexpected exceptions are logged and answered with a bare
500 ``INTERNAL_ERROR``; bad input is 400/422 with the field that was wrong.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Route

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


def _served(app: FastAPI) -> list[tuple[str, re.Pattern[str], set[str]]]:
    """(path, its regex, methods) of every documented route, through included routers."""
    return [
        (c.path, c.path_regex, set(c.methods))
        for c in iter_route_contexts(app.router.routes)
        if c.path and c.methods and getattr(c, "include_in_schema", True)
    ]


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path. Starlette's own ``Allow`` names only the
    first route that matched the path, while GET and POST on one path are two routes here (RFC 9110:
    a 405 lists all of them). A literal path (``/contracts/batch``) is its own resource, whatever a
    parameter's route (``/contracts/{contract_id}``) would also match."""
    matching = [(path, methods) for path, regex, methods in _served(request.app) if regex.match(request.url.path)]
    literal = [(path, methods) for path, methods in matching if "{" not in path]
    return sorted(set().union(*(methods for _, methods in literal or matching)))


async def method_not_allowed(_: Request) -> Response:
    raise StarletteHTTPException(405)


def claim_literal_paths(app: FastAPI) -> None:
    """Make a literal path answer 405 to the methods only a parameter's route serves: without this,
    PATCH /contracts/batch is routed to PATCH /contracts/{contract_id} and refused as a bad id (422),
    though /contracts/batch is a resource of its own that takes POST only."""
    served = _served(app)
    for path in sorted({p for p, _, _ in served if "{" not in p}):
        own = set().union(*(m for p, _, m in served if p == path))
        shadowing = set().union(*(m for p, regex, m in served if "{" in p and regex.match(path)))
        if shadowing - own:
            guard = Route(path, method_not_allowed, methods=sorted(shadowing - own), include_in_schema=False)
            app.router.routes.insert(0, guard)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.lower().replace("_", " ")
    response = error_response(exc.status_code, code, message)
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


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


def install_routes(app: FastAPI) -> None:
    """What the error mapping needs of the routes, once they are all in."""
    claim_literal_paths(app)
