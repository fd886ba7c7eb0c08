"""The app factory: every deployment (local stack, each Lambda, tests) builds its app here.

A Lambda passes only the routers it serves; the local stack passes all of them. Nothing here connects:
a Lambda passes its container's database stand-in (``lambda_support.runtime``), which connects on the
first request, so importing a handler stays cheap and an unreachable database is a 503 on the request
rather than a failed init. The feature-flag client (Powertools, botocore) is likewise built on first use.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI

from makima import __version__
from makima.api import errors, lean, openapi
from makima.api.after_write import PublishAfterWrite
from makima.api.limits import BodySizeLimit
from makima.api.routers import ALL_ROUTERS
from makima.api.routers.checkpoints import CHECKPOINTS_PATH
from makima.config import Settings, get_settings
from makima.db.connection import Database
from makima.domain.rate_limits import Limit, Limits
from makima.flags import build_flags
from makima.services.monitor import EventSink
from makima.services.principal_cache import PrincipalCache
from makima.services.rate_limits import Clock, RateLimiter
from makima.services.sync_waits import PollingWaits, SyncWaits, WaitLimiter
from makima.services.token_usage import UsageRecorder

if TYPE_CHECKING:
    from makima.db.async_pool import AsyncPooledDatabase

OPENAPI_URL = "/api/v1/openapi.json"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The asynchronous pool, if any, open while the app is served (on the loop that serves it)."""
    on_loop: AsyncPooledDatabase | None = app.state.async_database
    if on_loop is not None:
        await on_loop.open()
    try:
        yield
    finally:
        if on_loop is not None:
            await on_loop.close()


def create_app(
    database: Database,
    *,
    routers: Sequence[APIRouter] | None = None,
    settings: Settings | None = None,
    events: EventSink | None = None,
    clock: Clock | None = None,
    sync_waits: SyncWaits | None = None,
    principals: PrincipalCache | None = None,
    lean_routes: bool = True,
    async_database: AsyncPooledDatabase | None = None,
) -> FastAPI:
    """The app serving ``routers`` over ``database``. ``clock``: the rate limiter's (tests move it).
    ``sync_waits``: what wakes sync waits (the local stack's LISTEN connection); by default a
    backing-off schedule of reads (services/sync_waits.py). ``principals``: the cache of live tokens'
    principals, kept true by that same listener (services/principal_cache.py); None: every request
    looks its token up. ``lean_routes``: serve the hottest operations by their lean routes (api/lean.py);
    False sends every request through FastAPI (the tests compare the two). ``async_database``: the
    asynchronous pool (db/async_pool.py) the heartbeat endpoints, the state read and a plain state save
    send their statements on from the event loop, opened and closed with the app (its lifespan); None
    (Lambda, most tests): a worker thread runs them on ``database``, like every other endpoint."""
    settings = settings or get_settings()
    app = FastAPI(
        title="makima contracts",
        version=__version__,
        description="Contract management for fleets of AI-agent supervisors.",
        openapi_url=OPENAPI_URL,
        docs_url="/api/v1/docs",
        redoc_url=None,
        # FastAPI's own OpenTelemetry instrumentation, on by default since 0.16x, asks on every request
        # whether a provider is configured (environment reads included): 4 % of a heartbeat's server CPU
        # with none configured. The service's telemetry is its structured logs, its metrics and X-Ray
        # traces on AWS (docs/operations.md, "Logs, metrics and traces on AWS"), not OpenTelemetry.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=_lifespan,
    )
    app.state.database = database
    app.state.async_database = async_database
    app.state.settings = settings
    app.state.flags = functools.cache(lambda: build_flags(settings))
    app.state.events = events
    app.state.principals = principals
    app.state.rate_limiter = rate_limiter(database, settings, clock)
    app.state.sync_waits = sync_waits or PollingWaits()
    app.state.sync_wait_limiter = WaitLimiter(per_token=settings.sync.waits_per_token, total=settings.sync.waits_max)
    app.state.token_usage = UsageRecorder()  # last_used_at, once a minute per token (api/deps.py)
    errors.install(app)
    served = routers if routers is not None else ALL_ROUTERS
    for router in served:
        app.include_router(router)
    if lean_routes:
        lean.install(app.router.routes, lean.routes_of(served))
    errors.install_routes(app)
    openapi.install(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        larger={CHECKPOINTS_PATH: max(settings.max_body_bytes, settings.checkpoints.max_body_bytes)},
    )
    if events is not None:
        app.add_middleware(PublishAfterWrite, events=events)
    return app


def rate_limiter(database: Database, settings: Settings, clock: Clock | None = None) -> RateLimiter:
    """This process's per-token limits, from ``[rate_limits]`` (one per app: per Lambda container)."""
    cfg = settings.rate_limits
    limits = Limits(
        user=Limit(per_second=cfg.user_per_second, burst=cfg.user_burst),
        daemon=Limit(per_second=cfg.daemon_per_second, burst=cfg.daemon_burst),
    )
    return RateLimiter(database, limits, slice_seconds=cfg.slice_seconds, clock=clock)
