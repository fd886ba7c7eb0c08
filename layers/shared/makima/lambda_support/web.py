"""The web dashboard on AWS: the static page of ``makima/web`` served by the HTTP API at ``/dashboard``.

The same app as the local stack's (``makima.local.web.mount_dashboard``): the page holds no data and
needs no token to load; it calls the API of its own origin (the HTTP API serving it) and the WebSocket
monitor of ``MAKIMA_DASHBOARD__MONITOR_URL``, which the template sets to this stack's WebSocket API, so
the monitor's origin is fixed at deploy time and in the page's ``connect-src`` (a link cannot change it).
No database, no AWS call.
"""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import FastAPI
from mangum import Mangum

from makima.config import DashboardConfig, get_settings
from makima.lambda_support.observability import LambdaHandler, observed
from makima.local.web import mount_dashboard


def make_dashboard_app(dashboard: DashboardConfig | None = None) -> FastAPI:
    """The page's app; ``dashboard`` defaults to the settings' (the function's environment)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    mount_dashboard(app, dashboard if dashboard is not None else get_settings().dashboard)
    return app


def make_dashboard_handler(dashboard: DashboardConfig | None = None) -> LambdaHandler:
    """A Lambda handler answering HTTP API (payload 2.0) events for ``/dashboard`` and its files. The
    origins are read once, at cold start: a deployment changes them."""
    asgi = Mangum(make_dashboard_app(dashboard), lifespan="off", api_gateway_base_path="/")

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        response: dict[str, Any] = asgi(event, cast(Any, context))
        return response

    return observed(handle)
