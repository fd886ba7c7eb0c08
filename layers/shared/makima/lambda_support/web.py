"""The web dashboard on AWS: the static page of ``makima/web`` served by the HTTP API at ``/dashboard``.

The same app as the local stack's (``makima.local.web.mount_dashboard``): the page holds no data and
needs no token to load; it calls the API of its own origin and the WebSocket monitor given as ``?ws=``
(the stack's ``DashboardUrl`` output carries it). No database, no AWS call.
"""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import FastAPI
from mangum import Mangum

from makima.lambda_support.observability import LambdaHandler, observed
from makima.local.web import mount_dashboard


def make_dashboard_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    mount_dashboard(app)
    return app


def make_dashboard_handler() -> LambdaHandler:
    """A Lambda handler answering HTTP API (payload 2.0) events for ``/dashboard`` and its files."""
    asgi = Mangum(make_dashboard_app(), lifespan="off", api_gateway_base_path="/")

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        response: dict[str, Any] = asgi(event, cast(Any, context))
        return response

    return observed(handle)
