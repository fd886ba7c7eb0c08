"""``Idempotency-Key`` on creating POSTs: ``@idempotent`` under a route's decorator.

A client that resends a POST (the SDK does on 503 and 429, and a 503 can follow a commit) sends the same
``Idempotency-Key`` with each attempt; the route then runs once per key, and every later attempt with the
same request gets the first answer again (same status and body, plus ``Idempotent-Replayed: true``).
The same key with another request (body, path or query) is ``422 IDEMPOTENCY_KEY_REUSED``; while the
first attempt still runs, ``409 IDEMPOTENCY_IN_PROGRESS`` (retryable). Keys are scoped per user and per
route. Errors are not stored: a refused request changed nothing, so its retry is judged afresh.

Why a decorator on the endpoint rather than an ASGI middleware: the endpoint is where the principal, the
parsed body and the database the services use are all at hand, so the key can be scoped per user and the
services' transactions run inside the one transaction that also stores the answer
(``makima.api.idempotency_store``); it is the same code locally and on Lambda (Mangum runs the same app).
A request without the header runs the endpoint as before, and Powertools is not even imported.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.routing import Route

from makima.api.schemas import Body
from makima.config import Settings
from makima.db.connection import Database
from makima.domain.principals import Principal
from makima.errors import BadRequest

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Long enough for any UUID or ULID with a prefix, short enough to bound what a key can make us store.
MAX_KEY_LENGTH = 255
_REQUEST = "idempotency_request"
_KEY = "idempotency_key_header"
# Declared on the route (not only read from the request) so the OpenAPI document shows it.
_KEY_PARAMETER = Annotated[
    str | None,
    Header(
        alias=KEY_HEADER,
        # Printable ASCII, no space at either end (HTTP strips it, so the server would see another key).
        pattern=rf"^[\x21-\x7e](?:[\x20-\x7e]{{0,{MAX_KEY_LENGTH - 2}}}[\x21-\x7e])?$",
        description="Makes this create safe to resend: the same key with the same request within 24 h "
        "answers the first result again (`Idempotent-Replayed: true`); with another request, 422 "
        f"IDEMPOTENCY_KEY_REUSED. 1 to {MAX_KEY_LENGTH} printable ASCII characters, no space at either end "
        "(else 422 INVALID_REQUEST); a UUID per request.",
    ),
]
# Set on every decorated endpoint, so a test can prove every creating POST is covered.
MARKER = "__makima_idempotent__"


def _check(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise BadRequest(
            f"{KEY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters (a UUID is a good key)",
            {"header": KEY_HEADER, "max_length": MAX_KEY_LENGTH},
        )
    return key


def _payload(request: Request, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What makes two requests "the same" under one key: method, path, query and the parsed body (its
    canonical JSON is hashed: key order and spacing do not matter, a changed field does)."""
    # Only the request bodies: the other parameters are dependencies (the settings, the caller), which
    # say nothing about what was asked and may differ between two sends of the same request.
    bodies = {name: value.model_dump(mode="json") for name, value in kwargs.items() if isinstance(value, Body)}
    return {"method": request.method, "path": request.url.path, "query": request.url.query, "body": bodies}


def idempotent(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Honour ``Idempotency-Key`` on ``endpoint`` (a sync route with ``db`` and ``caller`` parameters,
    returning its response model). The route's own ``status_code`` is the stored status."""
    signature = inspect.signature(endpoint, eval_str=True)
    if not {"db", "caller"} <= signature.parameters.keys():
        raise TypeError(f"{endpoint.__qualname__}: an idempotent route takes db and caller")

    @functools.wraps(endpoint)
    def route(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs.pop(_REQUEST)
        key: str | None = kwargs.pop(_KEY)
        if key is None:
            return endpoint(*args, **kwargs)
        from makima.api import idempotency_store  # Powertools (and boto3) on the first keyed request

        caller: Principal = kwargs["caller"]
        settings: Settings = request.app.state.settings
        matched = request.scope.get("route")
        template = matched.path if isinstance(matched, Route) else request.url.path
        status = int(getattr(matched, "status_code", None) or 200)

        def execute(db: Database) -> tuple[int, dict[str, str], Any]:
            result = endpoint(*args, **{**kwargs, "db": db})
            return status, {"content-type": "application/json"}, jsonable_encoder(result)

        answer = idempotency_store.run(
            execute,
            db=kwargs["db"],
            user_id=caller.user_id,
            route=f"{request.method} {template}",
            key=_check(key),
            request=_payload(request, kwargs),
            expires_after_seconds=settings.idempotency.expires_after_seconds,
            in_progress_seconds=settings.idempotency.in_progress_seconds,
            lambda_context=request.scope.get("aws.context"),  # Mangum's, on Lambda
        )
        headers = {name: value for name, value in answer.headers.items() if name != "content-type"}
        if answer.replayed:
            headers[REPLAYED_HEADER] = "true"
        return JSONResponse(content=answer.body, status_code=answer.status, headers=headers)

    extra = [
        inspect.Parameter(_REQUEST, inspect.Parameter.KEYWORD_ONLY, annotation=Request),
        inspect.Parameter(_KEY, inspect.Parameter.KEYWORD_ONLY, annotation=_KEY_PARAMETER, default=None),
    ]
    route.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    setattr(route, MARKER, True)
    return route
