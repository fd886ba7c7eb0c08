"""Lean routes: the hottest operations served without FastAPI's per-request machinery (issue 15).

FastAPI spends most of a heartbeat's server CPU on itself: walking the included routers, solving a
dozen dependencies (each an ``await``, a cache key and a dict), reading the body through ``json.loads``
then validating the Python objects, and validating its own answer again against the response model
before encoding it (docs/performance.md, "Change 15"). For a handful of hot operations a lean route,
placed before every other route, does the same work directly: the operation's own pydantic model
parses the bytes (``validate_json``, one pass), the same dependency functions run in the same order
(the flag, the caller with its rate limit and token use, then the route's endpoint function itself,
called as a plain coroutine) and the answer is encoded once by its response model.

What a lean route does not do itself, it leaves to the operation's FastAPI route, its *twin*, which
stays registered (it is what the OpenAPI document describes): when the request is anything but the
usual well-formed JSON (another content type, a body or path parameter that does not validate), the
handler declines (returns ``None``) before anything has run, and the request, its body replayed, goes
on to the routes after the lean ones, exactly as if there were none. Every refusal of a malformed
request is therefore FastAPI's own 422, byte for byte. Errors raised on the lean path (a disabled flag,
401/403/429, the services' ``MakimaError``s) propagate to the same exception handlers as the twin's.
Everything around the router (the body size limit, the after-write publishing, the error middleware)
is unchanged: a lean route is a route.

``tests/integration/test_lean_routes.py`` sends every kind of request to an app with lean routes and to
one without (``create_app(..., lean_routes=False)``) and compares status, headers and body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import Message, Receive, Scope, Send

from makima.api.answers import serialized
from makima.api.compat import HEADER, choose_view
from makima.api.deps import get_principal
from makima.domain.principals import Principal
from makima.flags import Flag, require

# The handler of a lean route: the request and its whole body (empty for a GET); ``None`` declines it
# (the twin answers).
LeanHandler = Callable[[Request, bytes], Awaitable[Response | None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UUID = TypeAdapter(UUID)
T = TypeVar("T")


class LeanRoute(BaseRoute):
    """``method`` on ``path`` (the twin's full path, parameters as plain strings), served by ``handler``.

    Matches only its own method (no HEAD for a GET, no 405 of its own): anything else is left to the
    routes after it, which answer as they would without it."""

    def __init__(self, path: str, method: str, handler: LeanHandler) -> None:
        self.path = path
        self.path_format = path  # what FastAPI's router reports as the matched route (telemetry)
        self.method = method
        self.handler = handler
        self.path_regex, _, _ = compile_path(path)
        # The app's routes, which a declined request goes on to (``install``): the router's own list, so
        # the routes added after the lean ones were installed (the dashboard, the monitor) are in it.
        self.after: Sequence[BaseRoute] = ()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != self.method:
            return Match.NONE, {}
        match = self.path_regex.match(_route_path(scope))
        if match is None:
            return Match.NONE, {}
        params = {**scope.get("path_params", {}), **match.groupdict()}
        return Match.FULL, {"endpoint": self.handler, "path_params": params}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        read = self.method in _BODY_METHODS
        body = await request.body() if read else b""
        response = await self.handler(request, body)
        if response is not None:
            await response(scope, receive, send)
            return
        # The body was read off ``receive`` (even an empty one): the twin gets it again.
        await self._decline(scope, _replay(body, receive) if read else receive, send)

    async def _decline(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What the router would have done without the lean routes: the first full match among the other
        routes, else the first partial one (a 405), else the router's own default (a 404)."""
        partial: tuple[BaseRoute, Scope] | None = None
        for route in self.after:
            if isinstance(route, LeanRoute):
                continue
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        if partial is not None:
            route, child_scope = partial
            scope.update(child_scope)
            await route.handle(scope, receive, send)
            return
        await scope["router"].default(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the routes match: without the app's ``root_path`` (a mount point), as Starlette's own
    (``starlette._utils.get_route_path``, private)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body over once more, then defers to the real one (a
    disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def install(routes: list[BaseRoute], lean: Sequence[LeanRoute]) -> None:
    """Put ``lean`` before ``routes`` (an app router's list, changed in place)."""
    for route in lean:
        route.after = routes
    routes[:0] = lean


def is_json(request: Request) -> bool:
    """The body is declared JSON as FastAPI reads it (``application/json``, any parameters); the rarer
    forms it also accepts (``+json`` subtypes) are left to the twin."""
    content_type = request.headers.get("content-type")
    return content_type is not None and content_type.partition(";")[0].strip().lower() == "application/json"


def plain(request: Request) -> bool:
    """No query string and no ``X-Makima-Status`` header: the request the lean handlers take (with
    either, the twin answers: its query validation, the legacy status view)."""
    return not request.scope.get("query_string") and HEADER not in request.headers


def contract_id(request: Request) -> UUID | None:
    """The ``contract_id`` path parameter as the twin validates it; None: it does not (decline)."""
    try:
        return _UUID.validate_python(request.path_params["contract_id"])
    except ValidationError:
        return None


def contract_and_body(request: Request, body: bytes, model: TypeAdapter[T]) -> tuple[UUID, T] | None:
    """The ``contract_id`` path parameter and ``body`` as ``model`` (``contract_id``, ``json_body``);
    None when either declines."""
    target, parsed = contract_id(request), json_body(request, body, model)
    return None if target is None or parsed is None else (target, parsed)


def json_body(request: Request, body: bytes, model: TypeAdapter[T]) -> T | None:
    """``body`` as ``model``, when it is declared JSON and validates; None: decline (the twin's 422)."""
    if not is_json(request):
        return None
    try:
        return model.validate_json(body)
    except ValidationError:
        return None


async def serve(
    request: Request,
    endpoint: Callable[[Principal], Awaitable[BaseModel | Response]],
    *,
    flag: Flag | None = None,
    status_view: bool = False,
) -> Response:
    """Run what the twin's dependencies run before its endpoint, in their order: its router's feature
    ``flag`` (404 FEATURE_DISABLED) or ``status_view`` (the view of statuses for this request, from the
    flags: ``plain`` requests only), then the caller (401/403, its rate limit's 429, its token's use
    recorded after the response); then ``endpoint`` with the caller, its answer encoded once as the twin's
    response model would send it (``answers.serialized``), or sent as it is when it is a response."""
    flags = request.app.state.flags()
    if flag is not None:
        require(flags, flag)
    if status_view:
        await choose_view(flags)
    background = BackgroundTasks()
    principal = await get_principal(request, request.app.state.database, background)
    out = await endpoint(principal)
    response = out if isinstance(out, Response) else serialized(out)
    response.background = background
    return response


# Which lean routes each router brings (``register``): an app gets those of the routers it serves. Keyed
# by identity: FastAPI's routers are not hashable, and each is a module-level object that lives as long
# as the process.
_BY_ROUTER: dict[int, list[LeanRoute]] = {}


def register(router: APIRouter, route: LeanRoute) -> None:
    _BY_ROUTER.setdefault(id(router), []).append(route)


def routes_of(routers: Sequence[APIRouter]) -> list[LeanRoute]:
    return [route for router in routers for route in _BY_ROUTER.get(id(router), [])]
