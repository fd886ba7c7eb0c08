"""Database time limits (issue 12, defect 7): ``statement_timeout`` and
``idle_in_transaction_session_timeout`` are set on the application's role, in its database only, by
migrate; a statement they cancel is a 503 ``DATABASE_TIMEOUT`` (never a 500) that changed nothing; a
session they end does not poison the pool; and migrate's own sessions are never cut by them.

Each test works on a database of its own: the settings are per (role, database), and the session's
shared test database must keep the defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.api.deps import DB
from makima.api.routers import ALL_ROUTERS
from makima.db.async_pool import AsyncPooledDatabase
from makima.db.connection import PooledDatabase, SingleConnectionDatabase, transaction
from makima.db.migrate import migrate
from makima.errors import MakimaError
from makima.services import auth

pytestmark = pytest.mark.integration

SHORT_MS = 300  # both limits in the tests' own databases


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _set_role_limits(server_url: str, url: str, statement: str, idle: str) -> None:
    """What an operator (or an older deploy) may have left on the role: set from outside the database."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL(
                "ALTER ROLE CURRENT_USER IN DATABASE {} SET statement_timeout = {};"
                "ALTER ROLE CURRENT_USER IN DATABASE {} SET idle_in_transaction_session_timeout = {}"
            ).format(
                psycopg.sql.Identifier(_dbname(url)),
                psycopg.sql.Literal(statement),
                psycopg.sql.Identifier(_dbname(url)),
                psycopg.sql.Literal(idle),
            )
        )


def _role_settings(url: str) -> dict[str, str]:
    """The settings pg_db_role_setting holds for (current role, this database)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT s.setconfig FROM pg_db_role_setting s
                 JOIN pg_database d ON d.oid = s.setdatabase
                 JOIN pg_roles r ON r.oid = s.setrole
                WHERE d.datname = current_database() AND r.rolname = current_user"""
        ).fetchone()
    entries = list(row[0]) if row else []
    return dict(str(e).split("=", 1) for e in entries)


@pytest.fixture
def short_url(fresh_database: Callable[[str], str], server_url: str) -> str:
    """A migrated database whose role settings are 300 ms for both limits."""
    url = fresh_database("makima_timeouts")
    migrate(url)
    _set_role_limits(server_url, url, f"{SHORT_MS}ms", f"{SHORT_MS}ms")
    return url


@pytest.fixture
def short_db(short_url: str) -> Iterator[PooledDatabase]:
    # One connection: whatever a timeout does to it, the next request gets the same pool slot.
    database = PooledDatabase(short_url, min_size=1, max_size=1, timeout=2.0)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def admin_headers(short_db: PooledDatabase) -> dict[str, str]:
    with transaction(short_db) as conn:
        token = auth.ensure_admin(conn, token="mkm_timeouts_admin_token_0123456789")
    assert token is not None
    return {"Authorization": f"Bearer {token}"}


slow_router = APIRouter()


@slow_router.get("/test-only/slow")
def slow(db: DB) -> dict[str, Any]:
    """A test-only route: one statement slower than the limit."""
    with transaction(db) as conn:
        conn.execute("SELECT pg_sleep(2)")
    return {"slept": True}


def test_migrate_sets_the_limits_on_the_role_in_its_database(fresh_database: Callable[[str], str]) -> None:
    from makima.db.migrate import RoleTimeouts

    # Given a fresh database
    url = fresh_database("makima_timeouts")

    # When migrate runs with the configured limits
    migrate(url, role_timeouts=RoleTimeouts(statement_seconds=7.5, idle_in_transaction_seconds=42))

    # Then they are on the role, for this database only
    settings = _role_settings(url)
    assert settings["statement_timeout"] == "7500ms"
    assert settings["idle_in_transaction_session_timeout"] == "42000ms"
    # And a fresh connection runs under them
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7500ms",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("42s",)


def test_migrate_applies_the_default_limits(fresh_database: Callable[[str], str], server_url: str) -> None:
    # Given a fresh database, migrated as the tests, the local stack and the deploy function do by default
    url = fresh_database("makima_timeouts")
    migrate(url)

    # Then the role has [database]'s default statement and idle-in-transaction timeouts in it
    from makima.config import DatabaseConfig
    from makima.db.migrate import RoleTimeouts

    settings = _role_settings(url)
    assert {"statement_timeout", "idle_in_transaction_session_timeout"} <= set(settings)
    assert RoleTimeouts.of(DatabaseConfig()) == RoleTimeouts()
    assert settings["statement_timeout"] == RoleTimeouts().settings()["statement_timeout"] == "20000ms"
    # And the role elsewhere (the maintenance database) is untouched
    with psycopg.connect(server_url) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)


def test_migrate_is_not_cut_by_the_role_limits(fresh_database: Callable[[str], str], server_url: str) -> None:
    # Given a database whose role settings would cancel nearly every statement (1 ms)
    url = fresh_database("makima_timeouts")
    _set_role_limits(server_url, url, "1ms", "1ms")

    # When the whole chain migrates (index builds, backfills, DDL) on it
    applied = migrate(url)

    # Then every migration ran
    assert applied
    assert applied[-1].startswith("00")


def test_a_slow_statement_is_a_503_database_timeout(short_db: PooledDatabase) -> None:
    # Given an app with a route whose statement runs past the role's statement_timeout
    app = create_app(short_db, routers=[*ALL_ROUTERS, slow_router])
    with TestClient(app, raise_server_exceptions=False) as client:
        # When it is called
        started = time.monotonic()
        r = client.get("/test-only/slow")

        # Then the statement was cancelled at the limit and answered 503 DATABASE_TIMEOUT
        assert r.status_code == 503, r.text
        assert time.monotonic() - started < 1.5
        error = r.json()["error"]
        assert error["code"] == "DATABASE_TIMEOUT"
        assert "took too long" in error["message"]
        # And the next request works on the same (only) connection
        assert client.get("/api/v1/health").status_code == 200


def test_a_service_waiting_on_a_lock_past_the_limit_changes_nothing(
    short_db: PooledDatabase, short_url: str, admin_headers: dict[str, str]
) -> None:
    # Given a contract, and another session holding its row lock
    with TestClient(create_app(short_db), raise_server_exceptions=False) as client:
        created = client.post("/api/v1/contracts", json={"name": "locked"}, headers=admin_headers)
        assert created.status_code == 201, created.text
        contract = created.json()
        holder = psycopg.connect(short_url, options="-c idle_in_transaction_session_timeout=0")
        try:
            holder.execute("SELECT 1 FROM contracts WHERE id = %s FOR UPDATE", (contract["id"],))

            # When the API's phase change waits for that lock past the statement timeout
            r = client.post(
                f"/api/v1/contracts/{contract['id']}/status",
                json={"status": "active", "expected_version": contract["version"]},
                headers=admin_headers,
            )
        finally:
            holder.rollback()
            holder.close()

        # Then it is a 503 DATABASE_TIMEOUT, and the contract is as it was
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "DATABASE_TIMEOUT"
        after = client.get(f"/api/v1/contracts/{contract['id']}", headers=admin_headers).json()
        assert (after["version"], after["status"]) == (contract["version"], contract["status"])


def test_an_idle_transaction_ended_by_the_server_does_not_poison_the_pool(
    short_db: PooledDatabase, admin_headers: dict[str, str]
) -> None:
    # Given a transaction left idle past idle_in_transaction_session_timeout (the server ends the session)
    def idle_in_a_transaction() -> None:
        with transaction(short_db) as conn:
            conn.execute("SELECT 1")
            time.sleep(SHORT_MS / 1000 * 2)
            conn.execute("SELECT 1")

    with pytest.raises(MakimaError) as raised:
        idle_in_a_transaction()

    # Then the caller gets one of the API's errors (a 503, not a 500)
    assert raised.value.status == 503
    assert raised.value.code in {"DATABASE_TIMEOUT", "DATABASE_UNAVAILABLE"}
    # And the next request is served (a new connection replaced the dead one)
    with TestClient(create_app(short_db), raise_server_exceptions=False) as client:
        assert client.get("/api/v1/contracts", headers=admin_headers).status_code == 200


def test_the_lambda_connection_maps_the_timeout_and_survives(short_url: str) -> None:
    # Given a Lambda container's single connection to the database
    db = SingleConnectionDatabase(short_url)
    try:
        # When a statement runs past the limit
        with pytest.raises(MakimaError) as raised, db.connection() as conn:
            conn.execute("SELECT pg_sleep(2)")

        # Then it is DATABASE_TIMEOUT, and the connection serves the next statement
        assert (raised.value.code, raised.value.status) == ("DATABASE_TIMEOUT", 503)
        with db.connection() as conn:
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        db.close()


def test_a_heartbeat_sent_from_the_event_loop_maps_the_timeout_and_changes_nothing(
    short_db: PooledDatabase, short_url: str, admin_headers: dict[str, str]
) -> None:
    """The local stack's heartbeats go through its asynchronous pool (db/async_pool.py): a statement
    cancelled there is the same 503 DATABASE_TIMEOUT, and the pool's one connection serves the next one."""
    on_loop = AsyncPooledDatabase(short_url, min_size=1, max_size=1, timeout=2.0)
    with TestClient(create_app(short_db, async_database=on_loop), raise_server_exceptions=False) as client:
        # Given a supervisor, and another session holding its row lock
        contract = client.post("/api/v1/contracts", json={"name": "beating"}, headers=admin_headers).json()
        base = f"/api/v1/contracts/{contract['id']}/supervisor"
        task = client.post(base, json={}, headers=admin_headers).json()["supervisor"]["task_id"]

        def beat() -> Any:
            body = {"task_id": task, "state": "working", "phase": "plan", "timestamp": datetime.now(UTC).isoformat()}
            return client.post(f"{base}/heartbeat", json=body, headers=admin_headers)

        holder = psycopg.connect(short_url, options="-c idle_in_transaction_session_timeout=0")
        try:
            holder.execute("SELECT 1 FROM supervisor_states WHERE task_id = %s FOR UPDATE", (task,))
            # When a heartbeat waits for that lock past the statement timeout
            started = time.monotonic()
            r = beat()
            waited = time.monotonic() - started
        finally:
            holder.rollback()
            holder.close()

        # Then it is a 503 DATABASE_TIMEOUT at the limit, the supervisor has no heartbeat
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "DATABASE_TIMEOUT"
        assert waited < 1.5
        assert client.get(f"{base}/status", headers=admin_headers).json()["heartbeat_count"] == 0
        # And the next one is accepted on the same (only) connection
        r = beat()
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] is True
        assert client.get(f"{base}/status", headers=admin_headers).json()["heartbeat_count"] == 1
