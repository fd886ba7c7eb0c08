"""The local stack's principal cache on a real PostgreSQL (issue 15): a token is looked up once, then
answered from the cache; and a revocation reaches the cache however it is made — through this process's
API (refused on the very next request), by another process or an operator's SQL (refused as the trigger's
notice arrives), or while the listener is down (nothing is answered from the cache then).

The app is built as ``makima dev`` builds it (``create_app`` with the cache, ``SyncListener`` keeping it
true). The cache's own rules: tests/unit/test_principal_cache.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db import users as users_sql
from makima.db.connection import PooledDatabase
from makima.db.sync_notices import LISTENER_NAME
from makima.local.sync_listener import SyncListener
from makima.services.principal_cache import PrincipalCache
from tests.conftest import Caller

pytestmark = pytest.mark.integration


class Stack:
    def __init__(self, client: TestClient, cache: PrincipalCache, listener: SyncListener) -> None:
        self.client = client
        self.cache = cache
        self.listener = listener


@pytest.fixture
def stack(db: PooledDatabase, database_url: str) -> Iterator[Stack]:
    cache = PrincipalCache()
    listener = SyncListener(database_url, principals=cache).start()
    assert listener.listening.wait(10)
    app = create_app(db, principals=cache, sync_waits=listener)
    try:
        with TestClient(app) as client:
            yield Stack(client, cache, listener)
    finally:
        listener.stop()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The token lookups (``SELECT … FROM api_tokens``) the app runs, by digest."""
    seen: list[bytes] = []
    real = users_sql.resolve_token

    def counted(conn: Any, token_hash: bytes) -> Any:
        seen.append(token_hash)
        return real(conn, token_hash)

    monkeypatch.setattr(users_sql, "resolve_token", counted)
    return seen


def _me(stack: Stack, caller: Caller) -> int:
    code: int = stack.client.get("/api/v1/contracts?limit=1", headers=caller.headers).status_code
    return code


def _until(check: Callable[[], bool], timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.005)
    return time.monotonic() - started


def test_a_token_is_looked_up_once_then_answered_from_the_cache(
    stack: Stack, make_caller: Callable[..., Caller], lookups: list[bytes]
) -> None:
    caller = make_caller()
    lookups.clear()  # make_caller resolved it once itself
    for _ in range(5):
        assert _me(stack, caller) == 200
    assert len(lookups) == 1
    # an unknown token is never cached: each try is looked up (and refused)
    for _ in range(2):
        r = stack.client.get("/api/v1/contracts", headers={"Authorization": "Bearer mkm_nope"})
        assert r.status_code == 401
    assert len(lookups) == 3


def test_a_token_revoked_through_the_api_is_refused_on_the_next_request(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    # A live cache whose notices have not arrived (no listener here): the revoking route itself must
    # forget the token, or its next request would be answered from the cache.
    cache = PrincipalCache()
    cache.resume()
    caller, other = make_caller(), make_caller()
    with TestClient(create_app(db, principals=cache)) as client:
        for c in (caller, other, caller):
            assert client.get("/api/v1/contracts?limit=1", headers=c.headers).status_code == 200
        r = client.delete(f"/api/v1/tokens/{caller.principal.token_id}", headers=caller.headers)  # their own
        assert r.status_code == 204
        assert client.get("/api/v1/contracts?limit=1", headers=caller.headers).status_code == 401
        assert client.get("/api/v1/contracts?limit=1", headers=other.headers).status_code == 200


def test_a_token_revoked_by_sql_elsewhere_is_refused_as_the_notice_arrives(
    stack: Stack, make_caller: Callable[..., Caller], database_url: str
) -> None:
    caller = make_caller()
    other = make_caller()
    assert _me(stack, caller) == 200
    assert _me(stack, other) == 200
    with psycopg.connect(database_url, autocommit=True) as conn:  # an operator, another process
        conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (caller.principal.token_id,))
    waited = _until(lambda: _me(stack, caller) == 401)
    assert waited < 2.0
    assert _me(stack, other) == 200  # only that token
    # a deleted token too
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM api_tokens WHERE id = %s", (other.principal.token_id,))
    _until(lambda: _me(stack, other) == 401)


def test_nothing_is_answered_from_the_cache_while_the_listener_is_down(
    stack: Stack, make_caller: Callable[..., Caller], database_url: str, lookups: list[bytes]
) -> None:
    caller = make_caller()
    lookups.clear()
    assert _me(stack, caller) == 200
    assert _me(stack, caller) == 200
    assert len(lookups) == 1
    with psycopg.connect(database_url, autocommit=True) as conn:
        # the listener's session ends (a server restart, an operator): its notices would be lost
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            (LISTENER_NAME,),
        )
    _until(lambda: not stack.cache.live)
    assert _me(stack, caller) == 200
    assert _me(stack, caller) == 200
    down = len(lookups)
    assert down >= 3 or stack.cache.live  # looked up each time while down (unless already back)
    # back: answered from the cache again, starting empty
    _until(lambda: stack.cache.live)
    assert _me(stack, caller) == 200
    assert _me(stack, caller) == 200
    assert len(lookups) <= down + 1
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (caller.principal.token_id,))
    _until(lambda: _me(stack, caller) == 401)
