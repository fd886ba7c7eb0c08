"""RDS Proxy pinning (issue 14, item 4): nothing a Lambda container sends changes its session's state.

Behind RDS Proxy, a client session that changes session state (a named prepared statement, SET or
set_config — transaction-local ones included, an advisory lock, LISTEN, a temporary table, a cursor
declared in SQL, sequence functions) is pinned to one database connection until the client
disconnects. Every Lambda container keeps one connection, so a pinned one holds a database connection
for the container's life.

The representative request paths run here over the one container connection, as handlers in one
warm container would: the authorizer, HTTP writes and reads (create contract, heartbeat, supervisor
state, dashboard, batch), the monitor's ``$connect`` / ``$default`` / ``$disconnect``, the
broadcaster's replay, and every scheduled job. The requests run enough times for psycopg to prepare
what it would prepare. Then the text of every statement the container sent is scanned, and the same
session is inspected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import DictRow

from makima.db.connection import PooledDatabase
from makima.lambda_support import runtime
from tests.integration.test_lambda_handlers import (  # noqa: F401  (world: a fixture used here)
    SCHEDULED_FUNCTIONS,
    FakeContext,
    World,
    _authorizer_event,
    _http_event,
    handler_of,
    invoke,
    load_event,
    world,
)
from tests.integration.test_monitor_aws import Aws, aws, broadcast, connect, send  # noqa: F401  (aws: a fixture)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]

# Enough executions of each statement for psycopg's default prepare_threshold (5) to prepare it.
ROUNDS = 6

# What pins a session, by the statement's first keyword...
_PINNING_COMMANDS = re.compile(
    r"^\s*(SET|RESET|DISCARD|PREPARE|EXECUTE|DEALLOCATE|LISTEN|UNLISTEN|DECLARE|LOAD)\b", re.IGNORECASE
)
# ...or anywhere in it.
_PINNING_CALLS = re.compile(
    r"set_config\s*\(|pg_(try_)?advisory|nextval\s*\(|setval\s*\(|currval\s*\(|lastval\s*\("
    r"|\bCREATE\s+(GLOBAL\s+|LOCAL\s+)?TEMP(ORARY)?\b|\bWITH\s+HOLD\b",
    re.IGNORECASE,
)


def pinning_statements(statements: Iterable[str]) -> list[str]:
    """The statements among ``statements`` that RDS Proxy would pin a session for."""
    return [s for s in statements if _PINNING_COMMANDS.search(s) or _PINNING_CALLS.search(s)]


SENT: list[str] = []


def recording(base: type[psycopg.Cursor[DictRow]]) -> type[psycopg.Cursor[DictRow]]:
    """``base`` (the connection's cursor class), keeping the text of every statement sent in ``SENT``."""

    def remember(cursor: psycopg.Cursor[DictRow], query: Any) -> None:
        text = query.as_string(cursor) if isinstance(query, sql.Composable) else query
        SENT.append(text.decode() if isinstance(text, bytes) else str(text))

    class Recording(base):  # type: ignore[valid-type,misc]
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            remember(self, query)
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> None:
            remember(self, query)
            super().executemany(query, *args, **kwargs)

    return Recording


def test_the_scan_finds_what_pins() -> None:
    # The scanner itself: each known pinning cause is found, ordinary statements are not
    causes = [
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SELECT set_config('lock_timeout', %s, true)",
        "SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 7317))",
        "LISTEN makima_sync",
        "CREATE TEMP TABLE x (a int)",
        "  prepare p AS SELECT 1",
    ]
    assert pinning_statements(causes) == causes
    assert pinning_statements(["UPDATE contracts SET status = %s WHERE id = %s", "SELECT pg_notify(%s, %s)"]) == []


def _session_state(conn: psycopg.Connection[DictRow]) -> dict[str, Any]:
    """What this session keeps beyond its transactions."""

    def rows(query: LiteralString) -> list[Any]:
        return [next(iter(r.values())) for r in conn.execute(query).fetchall()]

    return {
        "prepared": rows("SELECT name FROM pg_prepared_statements"),
        # What libpq sends in the startup packet is source 'client'; SET / set_config(..., false) is 'session'.
        "session_settings": rows("SELECT name FROM pg_settings WHERE source = 'session'"),
        "advisory_locks": rows("SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"),
        "listening": rows("SELECT pg_listening_channels()"),
        "cursors": rows("SELECT name FROM pg_cursors"),
        "temp_tables": rows("SELECT relname FROM pg_class WHERE relpersistence = 't'"),
    }


def test_the_lambda_request_paths_send_nothing_that_pins_the_proxy_session(
    aws: Aws,  # noqa: F811
    world: World,  # noqa: F811
    db: PooledDatabase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given one warm container whose connection records what it sends
    runtime.reset()
    database = runtime.get_database()
    with database.connection() as conn:
        ordinary = conn.cursor_factory
        conn.cursor_factory = recording(ordinary)
        backend = conn.info.backend_pid
    SENT.clear()

    # When its handlers serve a representative set of requests, each several times
    owner = world.owner
    for _ in range(ROUNDS):
        assert invoke("authorizer", _authorizer_event(f"Bearer {owner.token}"))["isAuthorized"] is True
        for name in (
            "contracts_create",
            "contracts_get",
            "heartbeats_send",
            "heartbeats_batch",
            "supervisors_status",
            "supervisors_get_state",
            "dashboard_get",
        ):
            function = name.split("_", 1)[0]
            answer = invoke(function, _http_event(name, world, db))
            assert answer["statusCode"] < 300, (name, answer)
    batch = _http_event("batch_archive_old", world, db)
    body = json.loads(batch["body"])
    batch["body"] = json.dumps({**body, "dry_run": False})
    assert invoke("batch", batch)["statusCode"] == 200
    aws.published()
    assert connect(owner, "pin-1")["statusCode"] == 200
    assert json.loads(send("pin-1", {"last_event_id": "0"})["body"])["type"] == "subscribed"
    replays = [e for e in aws.published() if e["detail-type"] == "monitor.replay"]
    assert replays
    assert broadcast(replays)[0]["replayed"] > 0
    handler_of("monitor")({"requestContext": {"routeKey": "$disconnect", "connectionId": "pin-1"}}, FakeContext())
    sent = list(SENT)

    # Then every request went over the one connection
    with database.connection() as conn:
        conn.cursor_factory = ordinary
        assert conn.info.backend_pid == backend
        state = _session_state(conn)
    assert len(sent) > 100

    # And none of them sent a statement that pins the proxy session, and the session holds nothing
    # beyond its transactions (no prepared statement: psycopg would have prepared after 5 runs)
    assert sorted(set(pinning_statements(sent))) == []
    assert state == {
        "prepared": [],
        "session_settings": [],
        "advisory_locks": [],
        "listening": [],
        "cursors": [],
        "temp_tables": [],
    }
