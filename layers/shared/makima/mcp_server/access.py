"""Under whose token a tool calls the API, and what the model sees of the answer.

Every tool and resource is a thin call of the HTTP API through the SDK's ``MakimaApi``, under the
caller's own token, so authorisation, validation, the phase guard and the events stay the API's: the MCP
server holds no rule of its own and no database connection.

- stdio (``makima mcp``): the process serves one client, the token is the process's (``MAKIMA_TOKEN``).
- streamable HTTP (``/mcp``): each HTTP request carries its caller's ``Authorization: Bearer …``; a tool
  call runs under the token of the request that carries it (``http.py`` has already refused requests
  without a valid one). A token is never read from a URL.

The API calls are blocking (httpx), so each runs on a worker thread of the server's own limiter, not
AnyIO's default one: on the local stack the API being called serves its endpoints from that default
pool, and tool calls holding all of its threads while they wait for those endpoints would deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import CallToolResult, TextContent

from makima.client.api import ApiError, MakimaApi, RetryPolicy
from makima.mcp_server.waits import MAX_WAIT_SECONDS
from makima.services import auth

JSON = dict[str, Any]
# A model waits on each call: a few quick retries of what is safe to retry (unreachable, 503, 429), then
# the error, as for the CLI.
TOOL_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=2.0)
# Concurrent API calls per server process (tool calls and resource reads together).
MAX_CONCURRENT_CALLS = 32
# Read timeout of one API call: above the longest request a tool makes (none waits server-side today).
CALL_TIMEOUT = 30.0


def bearer_of(headers: Mapping[str, str] | None) -> str | None:
    """The token of a request's ``Authorization: Bearer …`` header (None when absent or another scheme),
    read as the API reads it (``services/auth.py: bearer``)."""
    if not headers:
        return None
    return auth.bearer(headers.get("authorization") or headers.get("Authorization"))


@dataclass
class Access:
    """How a tool reaches the API: ``api_url`` (with or without ``/api/v1``) and either one ``token`` for
    the whole process (stdio) or, when None, the bearer token of each request (HTTP).

    ``transport``: the httpx transport of the clients (None: the network; tests may pass another).
    ``max_wait_seconds``: the longest a tool waits for an owner's answer in one call (lower where the
    HTTP request carrying the call has a shorter limit: API Gateway's 30 s, ``lambda_support/mcp.py``)."""

    api_url: str
    token: str | None = None
    transport: httpx.BaseTransport | None = None
    max_wait_seconds: float = MAX_WAIT_SECONDS
    _shared: MakimaApi | None = field(default=None, init=False, repr=False)
    _limiter: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)

    def _client(self, headers: Mapping[str, str] | None) -> tuple[MakimaApi, bool]:
        """The client for a call with these request ``headers``, and whether the caller closes it."""
        if self.token is not None:
            if self._shared is None:
                self._shared = MakimaApi(
                    self.api_url, self.token, retry=TOOL_RETRY, transport=self.transport, timeout=CALL_TIMEOUT
                )
            return self._shared, False
        token = bearer_of(headers)
        if token is None:  # http.py refuses such requests before any tool runs; stated for the type
            raise ApiError(401, "UNAUTHORIZED", "no bearer token on this request")
        return MakimaApi(self.api_url, token, retry=TOOL_RETRY, transport=self.transport, timeout=CALL_TIMEOUT), True

    async def call(self, ctx: Context[Any, Any], work: Callable[[MakimaApi], JSON]) -> JSON:
        """Run ``work`` with the caller's client on a worker thread; ``ApiError`` rises as it came."""
        headers = ctx.headers if self.token is None else None

        def job() -> JSON:
            api, owned = self._client(headers)
            try:
                return work(api)
            finally:
                if owned:
                    api.close()

        if self._limiter is None:  # created on the event loop that uses it
            self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_CALLS)
        return await anyio.to_thread.run_sync(job, limiter=self._limiter)

    async def tool(self, ctx: Context[Any, Any], work: Callable[[MakimaApi], JSON]) -> CallToolResult:
        """A tool's result: the answer as JSON (text for the model, structured for programs), or the
        API's error as a tool error (``isError``) carrying its code, status, message and details."""
        try:
            data = await self.call(ctx, work)
        except ApiError as exc:
            return error_result(exc)
        return ok_result(data)

    async def resource(self, ctx: Context[Any, Any], work: Callable[[MakimaApi], JSON]) -> str:
        """A resource's text: the answer as JSON; an API error becomes a ``ResourceError`` (an MCP error
        whose message carries the API's code)."""
        try:
            data = await self.call(ctx, work)
        except ApiError as exc:
            raise ResourceError(describe(exc)) from exc
        return dump(data)


def dump(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def ok_result(data: JSON) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=dump(data))], structured_content=data)


def describe(exc: ApiError) -> str:
    """``CODE (status): message`` and the details, as one text a model can read."""
    text = f"{exc.code} ({exc.status}): {exc.message}" if exc.status else f"{exc.code}: {exc.message}"
    if exc.details:
        text += f"\ndetails: {dump(exc.details)}"
    return text


def error_result(exc: ApiError) -> CallToolResult:
    error = {"code": exc.code, "status": exc.status, "message": exc.message, "details": exc.details}
    return CallToolResult(
        content=[TextContent(type="text", text=describe(exc))], structured_content={"error": error}, is_error=True
    )


def refusal(code: str, message: str, **details: Any) -> ApiError:
    """A refusal the tool makes itself, before anything is sent (an argument the API cannot be asked
    about), in the shape and status of the API's own bad requests."""
    return ApiError(400, code, message, details)
