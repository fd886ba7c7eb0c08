"""``make_http_handler``: the Lambda handler of an HTTP API function serving some of the routers.

Each function builds the one app factory's app with only its routers, so its cold start imports and
wires no more than it serves, and wraps it with Mangum for API Gateway HTTP API (payload 2.0) events.
"""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import APIRouter, FastAPI
from mangum import Mangum

from makima.api.app import create_app
from makima.api.concurrency import call_inline
from makima.api.routers import ALL_ROUTERS
from makima.lambda_support.eventbridge import lambda_events
from makima.lambda_support.observability import LambdaHandler, observed
from makima.lambda_support.runtime import CONTAINER_DATABASE


def _publish_complete_openapi(app: FastAPI) -> None:
    """Make the app's ``/api/v1/openapi.json`` describe the whole API, not just this function's
    routers: API Gateway routes that path to one function, and clients need every endpoint. Built on
    the first request for it (no cold-start cost elsewhere) from the same factory as the local stack,
    so both serve the same document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = create_app(CONTAINER_DATABASE, routers=ALL_ROUTERS).openapi()
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def make_http_app(*routers: APIRouter) -> FastAPI:
    """The FastAPI app of a function serving ``routers`` (its database is the container's)."""
    if not routers:
        raise ValueError("an HTTP function serves at least one router")
    app = create_app(CONTAINER_DATABASE, routers=list(routers), events=lambda_events(CONTAINER_DATABASE))
    _publish_complete_openapi(app)
    return app


def make_http_handler(*routers: APIRouter) -> LambdaHandler:
    """A Lambda handler answering API Gateway HTTP API events with the routes of ``routers``."""
    call_inline()  # one event at a time per container: no threadpool hand-off for blocking calls
    # lifespan off: the app has no startup work, and the database opens on first use.
    # Base path "/": the API is served from its $default stage, so paths arrive as FastAPI knows them.
    asgi = Mangum(make_http_app(*routers), lifespan="off", api_gateway_base_path="/")

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # Mangum declares its own (structurally equal) context protocol; the object is the same.
        response: dict[str, Any] = asgi(event, cast(Any, context))
        return response

    return observed(handle, http=True)
