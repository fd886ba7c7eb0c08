"""The app's API routes as (METHOD, path) pairs, for tests that must cover every route.

FastAPI keeps included routers as lazy entries in ``app.routes``; ``iter_route_contexts`` expands them.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute

API_PREFIX = "/api/v1"


def api_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in iter_route_contexts(routes):
        path = route.path
        if path is None or not path.startswith(API_PREFIX) or path.startswith(f"{API_PREFIX}/docs"):
            continue
        if not getattr(route, "include_in_schema", True):  # e.g. a literal path's 405 guard (api/errors.py)
            continue
        found |= {(method, path) for method in route.methods or () if method != "HEAD"}
    assert len(found) > 20, "the route table looks empty: did FastAPI change how it stores routes?"
    return sorted(found)
