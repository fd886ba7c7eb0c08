"""The MCP server over streamable HTTP, as the local stack serves it at ``/mcp``.

Every HTTP request must carry ``Authorization: Bearer <token>``; ``BearerGate`` checks it before the
MCP transport sees the request and answers ``401 UNAUTHORIZED`` (``WWW-Authenticate: Bearer``) or
``403 FORBIDDEN`` (a metrics token) in the API's error shape otherwise. Tools then run under that
request's token (``access.py``): a token is never taken from the URL, and a request cannot act under
another request's token. The check is the API's own (``services/auth.py`` through the local stack's
principal cache: a live token costs no query, a revoked one is refused from its revocation on), the
local counterpart of the Lambda authorizer in front of the HTTP API; each tool's API call is then
checked again by the API, as any request.

The transport is stateless with JSON answers: a request is one exchange, no session lives on the
server (nothing to lose on a restart, nothing to pin to one process: a Lambda could serve it as is),
and no stream stays open. The SDK's session manager still needs its task group running, so
``mount_mcp`` runs it in the app's lifespan.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from makima.api.deps import principal_of
from makima.api.errors import error_response
from makima.db.connection import Database
from makima.errors import MakimaError, Unauthorized
from makima.mcp_server.access import Access, bearer_of
from makima.mcp_server.server import build_server
from makima.services.common import require_api_access
from makima.services.principal_cache import PrincipalCache

MCP_PATH = "/mcp"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# Checks a bearer token; raises the MakimaError to answer (Unauthorized, Forbidden, DatabaseUnavailable).
Verify = Callable[[str], Awaitable[None]]


class BearerGate:
    """ASGI: pass an HTTP request on only when its bearer token passes ``verify``."""

    def __init__(self, app: ASGIApp, verify: Verify) -> None:
        self.app = app
        self.verify = verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bearer_of(Headers(scope=scope))
        try:
            if token is None:
                raise Unauthorized(
                    "an Authorization: Bearer <token> header is required (the token is never read from the URL)"
                )
            await self.verify(token)
        except MakimaError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.details)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="makima"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def local_verifier(database: Database, principals: PrincipalCache | None) -> Verify:
    """The API's own token check (``api/deps.py: principal_of``): the principal cache first, else one
    query off the event loop; a metrics token is refused as on every API route but ``/metrics``."""

    async def verify(token: str) -> None:
        require_api_access(await principal_of(database, principals, token))

    return verify


def transport_security(host: str) -> TransportSecuritySettings | None:
    """Host and Origin checks against DNS rebinding while the stack listens on loopback only (the SDK's
    own default there); on another interface the names it is reached by are not known here, and every
    request needs a bearer token anyway, which a rebinding page does not have."""
    if host not in LOOPBACK:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


def mount_mcp(app: FastAPI, *, port: int, host: str = "127.0.0.1") -> None:
    """Serve makima's MCP server at ``/mcp`` on the local stack's ``app`` (listening on ``host``:``port``),
    its tools calling that same API over loopback. Not in the OpenAPI document (it is not the REST API)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - comparing, not binding
    server = build_server(Access(f"http://{target}:{port}"))
    server.streamable_http_app(stateless_http=True, json_response=True, transport_security=transport_security(host))
    manager = server.session_manager
    verify = local_verifier(app.state.database, app.state.principals)
    gate = BearerGate(StreamableHTTPASGIApp(manager), verify)
    app.router.routes.append(Route(MCP_PATH, endpoint=gate, include_in_schema=False))  # an ASGI app: every method

    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(served: Any) -> AsyncIterator[Any]:
        async with manager.run(), previous(served) as state:
            yield state

    app.router.lifespan_context = lifespan
