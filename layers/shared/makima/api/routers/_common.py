"""What every router shares: the prefix, and the one place the error responses of the OpenAPI document
are generated from.

Each operation declares the ``MakimaError`` classes it can answer: those every authenticated operation
answers (``COMMON``), those its router adds (``make_router(tag, *errors)``) and its own
(``responses=raises(...)``). The document's responses are built from that list, one per status, each
enumerating the codes of that status, so the document cannot drift from the classes: a new error is one
more class in a list (tests/integration/conftest.py checks every answer the integration tests see against
the document; tests/e2e/test_schemathesis.py fuzzes it).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter

from makima.api.concurrency import blocking
from makima.api.idempotency import MARKER as IDEMPOTENT_MARKER
from makima.errors import (
    BadRequest,
    DatabaseTimeout,
    DatabaseUnavailable,
    Forbidden,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidRequest,
    MakimaError,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)

PREFIX = "/api/v1"

Errors = Sequence[type[MakimaError]]

# What any authenticated operation can answer, whatever it does: malformed JSON or an unstorable value
# (400), no or a bad token (401), a token kind not allowed here (403), a body over the limit (413), a
# body or parameter against the schema (422), the token's rate limit (429), the database (503).
COMMON: Errors = (
    BadRequest,
    Unauthorized,
    Forbidden,
    PayloadTooLarge,
    InvalidRequest,
    RateLimited,
    DatabaseUnavailable,
    DatabaseTimeout,
)

# The keys under which ``raises`` hands an operation's own errors and what it creates to its router.
_RAISES = "x-makima-raises"
CREATES = "x-makima-creates"


def error_schema(codes: Iterable[str]) -> dict[str, Any]:
    """The error envelope with ``code`` restricted to ``codes``."""
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "enum": sorted(set(codes))},
                    "message": {"type": "string"},
                    "details": {"type": "object", "additionalProperties": True},
                },
            }
        },
    }


def error_responses(errors: Iterable[type[MakimaError]]) -> dict[int | str, dict[str, Any]]:
    """One OpenAPI response per status of ``errors``, listing its codes; the codes a schema-valid request
    may still get (``MakimaError.beyond_schema``) are named in ``x-refused-beyond-schema``, those about
    an id the body names rather than the URL's resource (``MakimaError.about_body``) in
    ``x-about-the-body``; 429 declares its ``Retry-After``."""
    by_status: dict[int, dict[str, bool]] = {}
    about_body: dict[int, set[str]] = {}
    for error in errors:
        codes = by_status.setdefault(error.status, {})
        codes[error.code] = codes.get(error.code, False) or error.beyond_schema
        if error.about_body:
            about_body.setdefault(error.status, set()).add(error.code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(by_status):
        codes = by_status[status]
        response: dict[str, Any] = {
            "description": f"{HTTPStatus(status).phrase}: {', '.join(sorted(codes))}",
            "content": {"application/json": {"schema": error_schema(codes)}},
        }
        beyond = sorted(code for code, flag in codes.items() if flag)
        if beyond:
            response["x-refused-beyond-schema"] = beyond
        if status in about_body:
            response["x-about-the-body"] = sorted(about_body[status])
        if status == 429:
            response["headers"] = {
                "Retry-After": {"description": "Whole seconds to wait.", "schema": {"type": "integer", "minimum": 1}}
            }
        responses[status] = response
    return responses


def raises(*errors: type[MakimaError], creates: dict[str, str] | None = None) -> dict[int | str, Any]:
    """An operation's own errors, besides its router's: ``@router.post(..., responses=raises(VersionConflict))``.

    ``creates``: for an operation that creates a resource, each path parameter that names it and where
    its value is in the answer (``{"contract_id": "$response.body#/id"}``); ``api/openapi.py`` turns it
    into OpenAPI links to every operation on it, so a client (or a fuzzer) can chain create → use."""
    return {_RAISES: errors, CREATES: creates or {}}


class MakimaRouter(APIRouter):
    """An APIRouter whose every operation's error responses come from its declared error classes."""

    def __init__(self, tag: str, errors: Errors, *, prefix: str) -> None:
        super().__init__(prefix=prefix, tags=[tag])
        self.errors = errors

    def add_api_route(  # same call, responses rebuilt
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        own = dict(responses or {})
        errors = (*self.errors, *own.pop(_RAISES, ()))
        if getattr(endpoint, IDEMPOTENT_MARKER, False):  # @idempotent: the key's own refusals
            errors = (*errors, IdempotencyKeyReused, IdempotencyInProgress)
        if "cursor" in inspect.signature(endpoint).parameters:  # a paged list: a cursor it did not hand out
            errors = (*errors, InvalidCursor)
        creates = own.pop(CREATES, None)
        if creates:
            kwargs["openapi_extra"] = {**(kwargs.get("openapi_extra") or {}), CREATES: creates}
        # An explicit response (health's 503 with its own body) wins over the generated one.
        super().add_api_route(path, in_one_hop(endpoint), responses={**error_responses(errors), **own}, **kwargs)


def in_one_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A plain ``def`` endpoint as an ``async def`` that runs it in the threadpool (``blocking``).

    FastAPI runs a plain endpoint in the threadpool, then validates its answer against the response
    model in the threadpool *again* (a second hand-off per request, ``serialize_response``); an ``async``
    endpoint's answer is validated on the event loop, where checking an instance of the model is a type
    check. So each request of a plain endpoint now takes one thread hand-off instead of two, and none in a
    Lambda (``blocking`` calls inline there), where each hand-off started a thread (issue 15,
    docs/performance.md). FastAPI reads the parameters and their annotations through ``__wrapped__``, so
    the operation is unchanged."""
    if inspect.iscoroutinefunction(endpoint):
        return endpoint

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await blocking(endpoint, *args, **kwargs)

    return run


def make_router(tag: str, *errors: type[MakimaError], common: Errors = COMMON, prefix: str = PREFIX) -> MakimaRouter:
    """The router of one group of operations; ``errors``: what all of them can answer besides ``common``
    (an unauthenticated route passes its own)."""
    return MakimaRouter(tag, (*common, *errors), prefix=prefix)
