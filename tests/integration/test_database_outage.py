"""While PostgreSQL is unreachable the API answers 503 DATABASE_UNAVAILABLE (never a 500 or a hang),
and it recovers by itself when the database comes back."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db.connection import PooledDatabase, SingleConnectionDatabase, transaction
from makima.db.migrate import migrate
from makima.errors import DatabaseUnavailable
from makima.services import auth
from tests.conftest import set_database_reachable

pytestmark = pytest.mark.integration


@pytest.fixture
def outage_url(fresh_database: Callable[[str], str]) -> str:
    url = fresh_database("makima_outage")
    migrate(url)
    return url


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _eventually(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_pooled_api_answers_503_then_recovers(outage_url: str, server_url: str) -> None:
    dbname = _dbname(outage_url)
    db = PooledDatabase(outage_url, min_size=1, max_size=4, timeout=1.0)
    with transaction(db) as conn:
        token = auth.ensure_admin(conn, token="mkm_outage_admin_token_0123456789")
    assert token is not None
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(create_app(db), raise_server_exceptions=False) as client:
            assert client.get("/api/v1/health").status_code == 200
            assert client.post("/api/v1/contracts", json={"name": "before"}, headers=headers).status_code == 201

            # When the database goes away
            set_database_reachable(server_url, dbname, False)
            try:
                health = client.get("/api/v1/health")
                assert health.status_code == 503
                assert health.json()["database"] == "unavailable"
                r = client.post("/api/v1/contracts", json={"name": "during"}, headers=headers)
                assert r.status_code == 503
                assert r.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
                assert client.get("/api/v1/contracts", headers=headers).status_code == 503
            finally:
                # When it comes back
                set_database_reachable(server_url, dbname, True)

            # Then the same app serves again without a restart
            assert _eventually(lambda: client.get("/api/v1/contracts", headers=headers).status_code == 200)
            names = [c["name"] for c in client.get("/api/v1/contracts", headers=headers).json()["contracts"]]
            assert names == ["before"]  # and nothing half-written during the outage
    finally:
        db.close()


def test_single_connection_database_reconnects(outage_url: str, server_url: str) -> None:
    dbname = _dbname(outage_url)
    db = SingleConnectionDatabase(outage_url, connect_timeout=1)
    with db.connection() as conn:
        conn.execute("SELECT 1")
    set_database_reachable(server_url, dbname, False)
    try:
        with pytest.raises(DatabaseUnavailable), db.connection() as conn:
            conn.execute("SELECT 1")
        with pytest.raises(DatabaseUnavailable), db.connection() as conn:
            conn.execute("SELECT 1")
    finally:
        set_database_reachable(server_url, dbname, True)
    with db.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == {"?column?": 1}
    db.close()


def test_the_local_monitor_says_try_again_later_while_the_database_is_down(outage_url: str, server_url: str) -> None:
    from starlette.websockets import WebSocketDisconnect

    from makima.local.monitor import CLOSE_TRY_AGAIN_LATER, CLOSE_UNAUTHORIZED, MONITOR_PATH, LocalHub, mount_monitor

    dbname = _dbname(outage_url)
    db = PooledDatabase(outage_url, min_size=1, max_size=4, timeout=1.0)
    with transaction(db) as conn:
        token = auth.ensure_admin(conn, token="mkm_outage_monitor_token_0123456789")
    app = create_app(db)
    mount_monitor(app, db, LocalHub("local:outage"))
    try:
        with TestClient(app) as client:
            # A bad token is refused (the handshake fails) ...
            with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(f"{MONITOR_PATH}?token=mkm_x"):
                pass
            assert refused.value.code == CLOSE_UNAUTHORIZED
            # ... while an unreachable database is "try again later", which a client retries
            set_database_reachable(server_url, dbname, False)
            try:
                with client.websocket_connect(f"{MONITOR_PATH}?token={token}") as ws:
                    with pytest.raises(WebSocketDisconnect) as later:
                        ws.receive_text()
                    assert later.value.code == CLOSE_TRY_AGAIN_LATER
            finally:
                set_database_reachable(server_url, dbname, True)
            # And once it is back, the monitor works
            assert _eventually(lambda: _subscribes(client, f"{MONITOR_PATH}?token={token}"))
    finally:
        db.close()


def _subscribes(client: TestClient, url: str) -> bool:
    from starlette.websockets import WebSocketDisconnect

    try:
        with client.websocket_connect(url) as ws:
            ws.send_text("{}")
            return bool(ws.receive_json()["type"] == "subscribed")
    except WebSocketDisconnect:
        return False
