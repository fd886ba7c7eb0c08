"""``make_mcp_handler``: the MCP function, makima's MCP server over streamable HTTP at ``/mcp`` on the
HTTP API (API Gateway payload 2.0 events, through Mangum), as the local stack serves it (``mcp_server/http.py``).

- Auth: the route has the API's Lambda authorizer, so a request reaching the function carries a live
  token; the handler still refuses one without ``Authorization: Bearer …`` (401, ``BearerGate``), and each
  tool's API call is checked again by the API, under that same token.
- Where the tools send the token: the API's base URL is the stack's own HttpApi URL, read from the SSM
  parameter the template writes (its name in ``MAKIMA_MCP_API_URL_PARAMETER``), never anything of the
  request (Host, ``X-Forwarded-Host``, ``requestContext.domainName``): a token must never go to a
  destination a request names. (A parameter rather than the URL itself in the environment: the API's
  routes refer to the function, so the function's environment cannot refer to the API; CloudFormation
  would find a cycle.) Read once per container, on the first request; a failed read is not kept (503,
  the next request reads again).
- The transport is stateless with JSON answers, one request one exchange. The SDK's session manager
  needs its task group running (``run()``), and a manager runs once: each invocation makes a new one
  around its one request (cheap: a few objects), on the server built once per container (the tools'
  schemas), so warm invocations work as the first.
- GET (the standalone SSE stream) is refused with 405, as the spec allows: a Lambda answer is buffered,
  so a stream could only hang until the function's timeout. DELETE gets the SDK's own 405 (no sessions).
- Waiting for an owner's answer is capped at ``LAMBDA_MAX_WAIT_SECONDS``, under API Gateway's 30 s
  integration limit with room for the question's own calls and a cold start; the tool then answers
  'waiting' and the model calls ``wait_for_answer`` again (``mcp_server/waits.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from makima.api.errors import error_response
from makima.lambda_support.observability import LambdaHandler, logger, observed
from makima.mcp_server.access import Access
from makima.mcp_server.http import MCP_PATH, BearerGate
from makima.mcp_server.server import build_server

API_URL_PARAMETER = "MAKIMA_MCP_API_URL_PARAMETER"
# API Gateway ends an integration at 30 s, the function at 29 s: a wait of 15 s leaves 14 s for asking
# the question, the last poll (a few paged reads) and a cold start.
LAMBDA_MAX_WAIT_SECONDS = 15.0
# No DNS-rebinding check: the function is reached only through API Gateway, by its own host names, and
# every request carries a bearer token (which a rebinding page does not have).
NO_HOST_CHECK = TransportSecuritySettings(enable_dns_rebinding_protection=False)

ResolveUrl = Callable[[], str]


class ApiUrlUnavailable(Exception):
    """The API's URL could not be read (the parameter missing, unreadable, or not an http(s) URL)."""


def parameter_api_url(name: str | None = None) -> str:
    """The API's base URL from the SSM parameter named ``name`` (default: ``MAKIMA_MCP_API_URL_PARAMETER``)."""
    name = name or os.environ.get(API_URL_PARAMETER)
    if not name:
        raise ApiUrlUnavailable(f"{API_URL_PARAMETER} is not set")
    import boto3  # here: only this function pays for it, once per container
    from botocore.config import Config

    # Short: a read that hangs must leave the request time to answer its 503 well within 29 s.
    config = Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2})
    try:
        value = str(boto3.client("ssm", config=config).get_parameter(Name=name)["Parameter"]["Value"])
    except Exception as exc:  # any failure to read is the same answer: unavailable for now
        raise ApiUrlUnavailable(f"cannot read {name}: {type(exc).__name__}") from exc
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ApiUrlUnavailable(f"{name} does not hold an http(s) URL")
    return value.rstrip("/")


class McpLambdaApp:
    """ASGI: ``/mcp`` for one invocation, on the container's server (built on the first request, once
    the API's URL is known)."""

    def __init__(self, api_url: ResolveUrl, max_wait_seconds: float = LAMBDA_MAX_WAIT_SECONDS) -> None:
        self._api_url = api_url
        self._max_wait_seconds = max_wait_seconds
        self._server: MCPServer[Any] | None = None
        self.gate = BearerGate(self._serve, self._authorized)

    @staticmethod
    async def _authorized(token: str) -> None:
        """The API's Lambda authorizer checked the token before API Gateway invoked the function."""

    def server(self) -> MCPServer[Any]:
        if self._server is None:
            access = Access(self._api_url(), max_wait_seconds=self._max_wait_seconds)
            self._server = build_server(access)
        return self._server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != MCP_PATH:
            await error_response(404, "NOT_FOUND", f"this function serves {MCP_PATH} only")(scope, receive, send)
            return
        await self.gate(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            await _no_stream()(scope, receive, send)
            return
        try:
            server = self.server()
        except ApiUrlUnavailable as exc:
            logger.warning("the MCP server has no API URL yet", extra={"reason": str(exc)})
            message = "the MCP server cannot reach the API yet; retry"
            await error_response(503, "SERVICE_UNAVAILABLE", message)(scope, receive, send)
            return
        server.streamable_http_app(stateless_http=True, json_response=True, transport_security=NO_HOST_CHECK)
        manager = server.session_manager  # this invocation's: a manager runs once
        async with manager.run():
            await manager.handle_request(scope, receive, send)


def _no_stream() -> JSONResponse:
    """405 for GET: no standalone SSE stream here (answers come in each POST's JSON response)."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Method Not Allowed: no SSE stream"}}
    return JSONResponse(body, status_code=405, headers={"Allow": "POST"})


def make_mcp_handler(
    api_url: ResolveUrl = parameter_api_url, *, max_wait_seconds: float = LAMBDA_MAX_WAIT_SECONDS
) -> LambdaHandler:
    """The Lambda handler answering API Gateway HTTP API events for ``/mcp``."""
    # lifespan off: the session manager runs per request (McpLambdaApp._serve), not per container.
    asgi = Mangum(McpLambdaApp(api_url, max_wait_seconds), lifespan="off", api_gateway_base_path="/")

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        response: dict[str, Any] = asgi(event, cast(Any, context))
        return response

    return observed(handle, http=True)
