"""The app factory: every deployment (local stack, each Lambda, tests) builds its app here.

A Lambda passes only the routers it serves; the local stack passes all of them. The database is
created lazily on first use, so importing a handler never opens a connection (cold starts stay
cheap, and an unreachable database is a 503 on the request rather than a failed init).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from fastapi import APIRouter, FastAPI

from makima import __version__
from makima.api import errors
from makima.api.limits import BodySizeLimit
from makima.api.routers import ALL_ROUTERS
from makima.config import Settings, get_settings
from makima.db.connection import Database
from makima.flags import Flags, build_flags

OPENAPI_URL = "/api/v1/openapi.json"


class LazyDatabase:
    """Calls ``factory`` once, on first use, and keeps the result."""

    def __init__(self, factory: Callable[[], Database]) -> None:
        self._factory = factory
        self._db: Database | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Database:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = self._factory()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _lazy_flags(settings: Settings) -> Callable[[], Flags]:
    """Build the feature-flag client on first use: it imports Powertools and botocore."""
    built: list[Flags] = []

    def get() -> Flags:
        if not built:
            built.append(build_flags(settings))
        return built[0]

    return get


def create_app(
    database: Database | Callable[[], Database],
    *,
    routers: Sequence[APIRouter] | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="makima contracts",
        version=__version__,
        description="Contract management for fleets of AI-agent supervisors.",
        openapi_url=OPENAPI_URL,
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    if hasattr(database, "connection"):
        ready: Database = database  # type: ignore[assignment]
        app.state.database = lambda: ready
    else:
        app.state.database = LazyDatabase(database)
    app.state.settings = settings
    app.state.flags = _lazy_flags(settings)
    errors.install(app)
    for router in routers if routers is not None else ALL_ROUTERS:
        app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
