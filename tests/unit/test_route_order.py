"""The order of ``ALL_ROUTERS`` puts the hottest routes first (matching walks the routers in order, issue
15), and it may: no route takes a request meant for a route after it. For each route, a request to it
(its parameters filled with ids) must not be matched, with the same method, by any route before it."""

from __future__ import annotations

import re
import uuid

from fastapi.routing import APIRoute

from makima.api.routers import ALL_ROUTERS


def _routes() -> list[APIRoute]:
    return [route for router in ALL_ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def _request_path(route: APIRoute) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), route.path)


def test_no_route_takes_the_requests_of_a_route_after_it() -> None:
    routes = _routes()
    assert len(routes) > 40
    for i, later in enumerate(routes):
        path = _request_path(later)
        for earlier in routes[:i]:
            shared = set(earlier.methods or ()) & set(later.methods or ())
            if shared and earlier.path_regex.match(path):
                raise AssertionError(f"{sorted(shared)} {later.path} is taken by {earlier.path}, listed before it")


def test_the_check_sees_a_shadowed_route() -> None:
    """The dashboard's literal path after the contract's parameter would be taken (what the order avoids)."""
    routes = {(r.path, *sorted(r.methods or ())): r for r in _routes()}
    by_id, dashboard = routes["/api/v1/contracts/{contract_id}", "GET"], routes["/api/v1/contracts/dashboard", "GET"]
    assert by_id.path_regex.match(_request_path(dashboard))
    assert "GET" in (by_id.methods or set()) & (dashboard.methods or set())


def test_the_hot_routes_come_first() -> None:
    paths = [r.path for r in _routes()]
    assert paths.index("/api/v1/contracts/{contract_id}/supervisor/heartbeat") < 3
    assert paths.index("/api/v1/contracts/{contract_id}/supervisor/state") < 15
    assert paths.index("/api/v1/contracts/{contract_id}/status") < 20
