"""Start the local stack: PostgreSQL (embedded unless ``DATABASE_URL`` is set), migrations, an admin
token, and the HTTP API on localhost, all running the same code as the Lambda functions.

Stopping (one SIGTERM or Ctrl-C) goes in the order that keeps the seed's guarantees: first the demo
fleet, while the API still answers, so each of its supervisors saves a ``shutdown`` state (restored
later as a clean stop, not a crash); then the API; then the scheduled jobs, the outbox pump and the
sync listener; then the database. The process then exits 0. A second signal skips the wait for the fleet.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from makima.config import Settings
from makima.db.async_pool import AsyncPooledDatabase
from makima.db.connection import PooledDatabase, transaction
from makima.db.embedded import EmbeddedPostgres, start_embedded
from makima.db.migrate import RoleTimeouts, migrate
from makima.flags import build_flags
from makima.local.monitor import (
    LocalHub,
    OutboxPump,
    forget_previous_connections,
    mount_monitor,
    transport_max_size,
)
from makima.local.scheduler import Scheduler, jobs_for
from makima.local.sync_listener import SyncListener
from makima.services.auth import AdminTokenOutcome, ensure_admin, register_admin_token
from makima.services.principal_cache import PrincipalCache

if TYPE_CHECKING:
    from makima.client.fleet import FleetHandle

log = logging.getLogger("makima.local")


@dataclass
class Backing:
    url: str
    embedded: EmbeddedPostgres | None
    database: PooledDatabase
    new_admin_token: str | None
    # The --admin-token given was revoked since: it stays revoked (registering it again would undo a
    # leak's revocation), and it cannot be used (by the demo fleet, say).
    admin_token_revoked: bool = False


@contextlib.contextmanager
def backing_services(settings: Settings, *, admin_token: str | None = None) -> Iterator[Backing]:
    """Database up, schema current, an admin able to log in; everything stopped on exit. An
    ``admin_token`` revoked since it was registered stays revoked (``admin_token_revoked``): the stack
    starts, and that token is refused like any revoked one."""
    for noisy in ("pgserver", "yoyo"):  # their INFO lines narrate every step of initdb and migrate
        logging.getLogger(noisy).setLevel(logging.WARNING)
    embedded = None if settings.database_url else start_embedded(settings.data_dir)
    url = settings.database_url or (embedded.url if embedded else "")
    try:
        applied = migrate(url, role_timeouts=RoleTimeouts.of(settings.database))
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        database = PooledDatabase(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.db_connect_timeout,
        )
        try:
            with transaction(database) as conn:
                if admin_token is None:
                    new_token, revoked = ensure_admin(conn), False
                else:
                    outcome = register_admin_token(conn, name="admin", token=admin_token)
                    new_token = admin_token if outcome is AdminTokenOutcome.REGISTERED else None
                    revoked = outcome is AdminTokenOutcome.REVOKED
            yield Backing(url, embedded, database, new_token, revoked)
        finally:
            database.close()
    finally:
        if embedded is not None:
            embedded.stop()


def _start_demo(
    backing: Backing, settings: Settings, host: str, port: int, admin_token: str | None, n: int
) -> FleetHandle:
    """The demo fleet needs an admin's plaintext token: the one given, the one just minted, or a
    session token registered now (tokens are stored hashed, so an old one cannot be recovered)."""
    from makima.client.fleet import run_fleet_in_background

    token = (None if backing.admin_token_revoked else admin_token) or backing.new_admin_token
    if token is None:
        token = f"mkm_demo_{secrets.token_urlsafe(24)}"
        with transaction(backing.database) as conn:
            ensure_admin(conn, token=token)
    target = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - comparing, not binding
    print(f"makima: demo fleet of {n} reference supervisors starting", flush=True)
    return run_fleet_in_background(
        f"http://{target}:{port}", token, n, crash=min(2, n), out=lambda line: print(f"demo: {line}", flush=True)
    )


def _exit_on_sigterm() -> None:
    """A SIGTERM before the API is up (initdb, migrations) unwinds like Ctrl-C, so the embedded
    PostgreSQL is stopped on the way out rather than left running."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _ordered_server(config: Any, before_exit: Callable[[], object] | None) -> Any:
    """A uvicorn server whose first SIGINT/SIGTERM runs ``before_exit`` (stopping the fleet) while it
    keeps serving, and only then shuts down. Uvicorn's own handler stops serving at once and re-raises
    the signal after its shutdown: the fleet's goodbye saves then found no API, and the re-raised
    SIGTERM killed the process with 143. Here the signal is handled, not re-raised: a clean exit."""
    import uvicorn

    class OrderedServer(uvicorn.Server):
        def __init__(self) -> None:
            super().__init__(config)
            self._stopping = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self._stopping or before_exit is None:
                self.should_exit = True  # the second signal: do not wait for the fleet any longer
                return
            self._stopping = True
            print("makima: stopping: the demo fleet first (shutdown saves), then the API", flush=True)

            def drain() -> None:
                try:
                    before_exit()
                except Exception:  # the API must still stop
                    log.exception("stopping the demo fleet failed")
                finally:
                    self.should_exit = True

            # Not in the handler itself: it runs on the event loop's thread, which must keep serving
            # the fleet's shutdown saves meanwhile.
            threading.Thread(target=drain, name="makima-stop-fleet", daemon=True).start()

    return OrderedServer()


def serve(
    settings: Settings, *, host: str, port: int, admin_token: str | None, echo: bool = True, demo: int = 0
) -> None:
    """Run the stack until interrupted; with ``demo`` > 0, a fleet of that many reference supervisors
    works contracts against it (two of them crash and are restored), restarting as contracts finish."""
    import uvicorn

    _exit_on_sigterm()

    from makima.api.app import create_app

    with backing_services(settings, admin_token=admin_token) as backing:
        where = f"embedded PostgreSQL in {backing.embedded.data_dir}" if backing.embedded else "DATABASE_URL"
        if echo:
            print(f"makima: database: {where}", flush=True)
            if backing.new_admin_token and admin_token is None:
                print("makima: admin token (shown once, store it now):", flush=True)
                print(f"  export MAKIMA_TOKEN={backing.new_admin_token}", flush=True)
            if backing.admin_token_revoked:
                print(
                    "makima: the --admin-token given was revoked; it stays revoked (start with another one,"
                    " or without one to have a new one minted when no admin token is live)",
                    flush=True,
                )
            print(f"makima: API on http://{host}:{port}/api/v1 (OpenAPI at /api/v1/openapi.json)", flush=True)
            print(f"makima: monitor on ws://{host}:{port}/api/v1/contracts/monitor?token=…", flush=True)
            print(f"makima: dashboard on http://{host}:{port}/dashboard (sign in with the token)", flush=True)
            print(f"makima: MCP (streamable HTTP) on http://{host}:{port}/mcp (Authorization: Bearer …)", flush=True)
            if settings.flags_file:
                print(
                    f"makima: feature flags: {settings.flags_file} (re-read every {settings.flags_max_age:g} s)",
                    flush=True,
                )
        # One flag client for the monitor, the pump and the jobs (the app builds its own): each asks
        # on every call, so a flag switched in the flags file reaches all of them.
        flags = build_flags(settings)
        hub = LocalHub(endpoint=f"local:{socket.gethostname()}:{port}")
        forget_previous_connections(backing.database, hub.endpoint)
        pump = OutboxPump(backing.database, hub, flags=flags).start()
        # One LISTEN connection wakes every waiting sync call (they hold no thread, no pooled connection)
        # and keeps the principal cache true (a revoked token is forgotten as its notice arrives).
        principals = PrincipalCache()
        sync_listener = SyncListener(
            backing.url, connect_timeout=settings.db_connect_timeout, principals=principals
        ).start()
        # The heartbeats', the state read's and a plain state save's statements are sent from the event loop
        # on a pool of their own, with the blocking pool's limits (db/async_pool.py); the app's lifespan
        # opens and closes it.
        on_loop = AsyncPooledDatabase(
            backing.url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.db_connect_timeout,
        )
        app = create_app(
            backing.database,
            settings=settings,
            events=pump,
            sync_waits=sync_listener,
            principals=principals,
            async_database=on_loop,
        )
        from makima.local.web import mount_dashboard
        from makima.mcp_server.http import mount_mcp

        mount_dashboard(app, settings.dashboard)
        mount_mcp(app, port=port, host=host)  # MCP over streamable HTTP at /mcp (docs/integrations.md)
        mount_monitor(app, backing.database, hub, flags, settings.monitor)
        scheduler = Scheduler(jobs_for(backing.database, settings, pump.publisher, flags)).start()
        fleet = _start_demo(backing, settings, host, port, admin_token, demo) if demo > 0 else None
        try:
            # No permessage-deflate: it compressed the same event once per monitor connection (API
            # Gateway's WebSocket APIs offer none either). A long-lived server with a large heap: young
            # objects are collected 70 times less often than by default, which ran a 120-140 ms full
            # collection about every second under fan-out to 1,000 monitors (docs/performance.md).
            gc.set_threshold(50_000, 20, 100)
            # ws_max_size: a monitor message is small (docs/api.md, "Monitor"); uvicorn's default would read
            # and buffer 16 MiB of one. uvloop and httptools (C event loop and HTTP parser, pinned): the
            # pure-Python h11 parser and asyncio loop were a fifth of a request's CPU (docs/performance.md,
            # "Where a request's time goes"); named, not "auto", so a missing one fails at start.
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                loop="uvloop",
                http="httptools",
                log_level="warning",
                access_log=False,
                ws_per_message_deflate=False,
                ws_max_size=transport_max_size(settings.monitor),
            )
            _ordered_server(config, fleet.stop if fleet is not None else None).run()
        finally:
            if fleet is not None:
                fleet.stop()  # already stopped unless the server failed; then without an API, but stopped
            scheduler.stop()
            pump.stop()
            sync_listener.stop()
        if echo:
            print("makima: stopped", flush=True)
