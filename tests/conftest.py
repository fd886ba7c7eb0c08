"""Shared fixtures: one fresh PostgreSQL database per test run, migrated, and helpers to make callers.

Without DATABASE_URL the run starts its own embedded PostgreSQL in a temporary directory; with it, a
new database named makima_test_<random> is created on that server and dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from makima.db.connection import PooledDatabase, transaction
from makima.db.embedded import start_embedded
from makima.db.migrate import migrate
from makima.domain.principals import Principal, Role
from makima.services import auth


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def server_dir() -> Path:
    """A directory for an embedded server, outside pytest's own temporary root: the server runs as
    another user, and pytest resets its root to mode 0700 whenever another run starts."""
    return Path(tempfile.mkdtemp(prefix="makima-test-"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A maintenance URL of a PostgreSQL server that tests may create databases on."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    root = server_dir()
    pg = start_embedded(root / "data", keep_data=False)
    try:
        yield pg.url
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def set_database_reachable(server_url: str, dbname: str, reachable: bool) -> None:
    """Simulate a database outage on a real server: refuse new connections to ``dbname`` and end the
    open ones (or allow them again)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )


@pytest.fixture(scope="session")
def fresh_database(server_url: str) -> Iterator[Callable[[str], str]]:
    """Create a new empty database on the test server; returns its URL. Dropped at session end."""
    created: list[str] = []

    def make(prefix: str = "makima_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_dbname(server_url, name)

    yield make
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(fresh_database: Callable[[str], str]) -> str:
    url = fresh_database("makima_test")
    migrate(url)
    return url


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[PooledDatabase]:
    database = PooledDatabase(database_url, min_size=1, max_size=30)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(scope="session")
def admin(db: PooledDatabase) -> Principal:
    with transaction(db) as conn:
        secret = auth.ensure_admin(conn, name="test-admin", token=f"mkm_admin_{uuid.uuid4().hex}")
        assert secret is not None
        return auth.resolve_with(conn, secret)


class Caller:
    """A user (or daemon) with a real token, for both in-process services and HTTP tests."""

    def __init__(self, principal: Principal, token: str) -> None:
        self.principal = principal
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_caller(db: PooledDatabase, admin: Principal) -> Callable[..., Caller]:
    """``make_caller()`` -> a new user; ``make_caller(role=Role.ADMIN)``; ``make_caller(daemon_for=c)``."""

    def make(role: Role = Role.USER, daemon_for: Caller | None = None) -> Caller:
        if daemon_for is not None:
            issued = auth.issue_token(db, admin, daemon_for.principal.user_id, name="daemon", kind="daemon")
        else:
            user = auth.create_user(db, admin, name=f"u{uuid.uuid4().hex[:12]}", role=role)
            issued = auth.issue_token(db, admin, user.id, name="test", kind="user")
        return Caller(auth.resolve(db, issued.secret), issued.secret)

    return make
