"""FastAPI dependencies: the database of the running app and the calling principal."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import BackgroundTasks, Depends, Request

from makima.api.concurrency import blocking
from makima.config import Settings
from makima.db.connection import Database
from makima.domain.principals import Principal, Role
from makima.flags import Flag, Flags, require
from makima.services import auth
from makima.services.common import require_api_access
from makima.services.completion import CompletionPolicy
from makima.services.monitor import EventSink
from makima.services.principal_cache import PrincipalCache
from makima.services.rate_limits import RateLimiter
from makima.services.token_usage import UsageRecorder

# The dependencies are ``async def`` because none of them blocks (the token lookup, the one that reads
# the database, goes to the threadpool itself): FastAPI runs every plain ``def`` dependency in the
# threadpool, a thread hand-off per dependency per request, and under Mangum (a Lambda) a new thread
# per invocation. Measured by tests/bench/bench_heartbeats.py (docs/performance.md).


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_events(request: Request) -> EventSink | None:
    """Where this deployment sends events (None in apps built without a pipeline, e.g. some tests)."""
    events: EventSink | None = request.app.state.events
    return events


async def get_principals(request: Request) -> PrincipalCache | None:
    """The local stack's principal cache (None elsewhere): a route that revokes a token forgets it."""
    principals: PrincipalCache | None = request.app.state.principals
    return principals


async def get_flags(request: Request) -> Flags:
    flags: Flags = request.app.state.flags()
    return flags


async def get_policy(
    settings: Annotated[Settings, Depends(get_app_settings)], flags: Annotated[Flags, Depends(get_flags)]
) -> CompletionPolicy:
    """What auto-completion and the statuses may do on this request: the settings, gated by the
    auto_complete and enhanced_contract_status flags (evaluated per request)."""
    enhanced = flags.enabled(Flag.ENHANCED_CONTRACT_STATUS)
    if not flags.enabled(Flag.AUTO_COMPLETE):
        return CompletionPolicy.flags_off(enhanced_statuses=enhanced)
    return CompletionPolicy(
        auto_complete=settings.contracts.auto_complete_enabled,
        auto_advance_phases=settings.contracts.auto_advance_phases,
        enhanced_statuses=enhanced,
    )


def feature(flag: Flag) -> Any:
    """A dependency that answers 404 FEATURE_DISABLED while ``flag`` is off."""

    async def check(flags: Annotated[Flags, Depends(get_flags)]) -> None:
        require(flags, flag)

    return Depends(check)


def _authorizer_context(request: Request) -> dict[str, Any] | None:
    """The context our Lambda authorizer attached, when running behind API Gateway.

    Mangum puts the raw event in the ASGI scope; locally there is no such event, so a client cannot
    forge a principal by sending headers: the token is always checked against the database.
    """
    event = request.scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    ctx = event.get("requestContext", {}).get("authorizer", {}).get("lambda")
    return ctx if isinstance(ctx, dict) and "user_id" in ctx else None


async def principal_of(db: Database, principals: PrincipalCache | None, token: str | None) -> Principal:
    """The principal of a bearer token (``Unauthorized`` when missing, unknown or revoked): the local
    stack's cache of live tokens first (no round trip), else one SELECT off the event loop. The API's
    dependencies and the MCP endpoint's gate (``mcp_server/http.py``) both check tokens here."""
    principal = auth.cached(principals, token) if principals is not None else None
    if principal is None:  # not cached (or no cache: tests, Lambda)
        principal = await blocking(auth.resolve, db, token, principals)
    return principal


async def _authenticate(request: Request, db: Database, background: BackgroundTasks) -> Principal:
    """The caller, whatever its kind: from the authorizer's context on AWS, else its bearer token checked
    against the database (or the local stack's cache of live tokens, which revocations empty:
    ``services/principal_cache.py``), its use recorded after the response (``services/token_usage.py``)."""
    ctx = _authorizer_context(request)
    if ctx is not None:
        token_id = ctx.get("token_id")
        return Principal(
            user_id=UUID(str(ctx["user_id"])),
            role=Role(str(ctx["role"])),
            token_id=UUID(str(token_id)) if token_id else None,
        )
    principal = await principal_of(db, request.app.state.principals, auth.bearer(request.headers.get("authorization")))
    usage: UsageRecorder = request.app.state.token_usage
    on_lambda = isinstance(request.scope.get("aws.event"), dict)
    if not on_lambda and principal.token_id is not None and (at := usage.due(principal.token_id)) is not None:
        # Once a minute per token: the write runs after the response is sent (never on its path). Not in
        # a Lambda (a token checked here because the authorizer deferred): Mangum would run the task
        # before returning, and the authorizer records uses there.
        background.add_task(usage.record, db, principal.token_id, at)
    return principal


async def _admit(request: Request, principal: Principal) -> None:
    """Admit the caller by its token's rate limit (``RateLimited`` 429 past it).

    Every authenticated route depends on this (through ``Caller`` or ``Scraper``), so the limit covers
    them all (and nothing else: health, the dashboard page). It is enforced here, in the function, not
    in the Lambda authorizer: API Gateway caches the authorizer's answer per token, so most requests
    never reach it. The limit is checked before the route's body runs, so a refused request changes
    nothing."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and not limiter.admit_locally(principal):
        await blocking(limiter.admit, principal)


async def get_principal(
    request: Request, db: Annotated[Database, Depends(get_db)], background: BackgroundTasks
) -> Principal:
    """The caller of every route but ``/metrics``: a metrics token is refused here (403 FORBIDDEN), so a
    route is closed to it unless it asks for ``Scraper`` instead; then its rate limit."""
    principal = await _authenticate(request, db, background)
    require_api_access(principal)
    await _admit(request, principal)
    return principal


async def get_scraper(
    request: Request, db: Annotated[Database, Depends(get_db)], background: BackgroundTasks
) -> Principal:
    """The caller of ``GET /metrics``: admits metrics tokens too (the service checks the role)."""
    principal = await _authenticate(request, db, background)
    await _admit(request, principal)
    return principal


DB = Annotated[Database, Depends(get_db)]
Caller = Annotated[Principal, Depends(get_principal)]
Scraper = Annotated[Principal, Depends(get_scraper)]
Config = Annotated[Settings, Depends(get_app_settings)]
FeatureFlags = Annotated[Flags, Depends(get_flags)]
Policy = Annotated[CompletionPolicy, Depends(get_policy)]
Events = Annotated[EventSink | None, Depends(get_events)]
Principals = Annotated[PrincipalCache | None, Depends(get_principals)]
