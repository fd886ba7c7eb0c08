"""The wake-up of sync waits on real PostgreSQL: the heartbeat that collects a sync request NOTIFYs
(on commit, with the contract's id; nothing for other heartbeats), and the local stack's listener wakes
the waiters of that contract, re-opens its connection when the server ends it, and wakes every waiter
then (the notices of the gap are lost). The waits end to end, under uvicorn: tests/e2e/test_sync_waits.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.db.sync_notices import LISTENER_NAME, SYNC_CHANNEL
from makima.local.sync_listener import SyncListener
from tests.conftest import Caller
from tests.integration.test_supervisors import start

T = TypeVar("T")

pytestmark = pytest.mark.integration


def _notices(conn: psycopg.Connection[tuple[object, ...]], timeout: float = 0.5) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=timeout) if n.channel == SYNC_CHANNEL]


def test_the_heartbeat_collecting_a_sync_notifies_its_contract(
    client: TestClient, user: Caller, database_url: str
) -> None:
    sup = start(client, user, name="notify")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {SYNC_CHANNEL}")
        # a heartbeat with no sync asked of it: no notice
        assert sup.beat().status_code == 200
        assert _notices(listener) == []
        # asked: the heartbeat that collects it notifies, once
        r = client.post(sup.url("/supervisor/sync"), json={"wait_seconds": 0}, headers=user.headers)
        assert r.status_code == 202
        assert _notices(listener, 0.2) == []  # asking alone wakes nobody
        assert sup.beat().json()["sync_requested"] is True
        assert _notices(listener) == [sup.contract_id]
        assert sup.beat().status_code == 200
        assert _notices(listener) == []


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` without its side effect on the main thread: it leaves no current event loop, and
    Mangum (the Lambda handler tests later in the session) asks for one."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _listener_pid(database_url: str) -> int | None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (LISTENER_NAME,),
        ).fetchone()
    return int(str(row[0])) if row else None


def _until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_listener_wakes_the_contracts_waiters_and_survives_losing_its_connection(
    client: TestClient, user: Caller, database_url: str
) -> None:
    sup, other = start(client, user, name="listen-a"), start(client, user, name="listen-b")
    listener = SyncListener(database_url).start()
    try:
        _until(listener.listening.is_set)

        async def woken_within(contract_id: str, act: object, timeout: float) -> float | None:
            """Seconds from ``act`` (run on a thread) to the wake-up of a waiter of ``contract_id``."""
            with listener.subscribe(UUID(contract_id)) as wakeup:
                await asyncio.to_thread(act)  # type: ignore[arg-type]
                t0 = time.monotonic()
                await wakeup.wait(timeout)
                took = time.monotonic() - t0
            return took if took < timeout else None

        def ask_and_collect() -> None:
            client.post(sup.url("/supervisor/sync"), json={"wait_seconds": 0}, headers=user.headers)
            assert sup.beat().json()["sync_requested"] is True

        # Woken by the collecting heartbeat's commit (the act returns after it), at once
        took = _run(woken_within(sup.contract_id, ask_and_collect, 2.0))
        assert took is not None
        assert took < 0.1
        # a waiter of another contract is not
        assert _run(woken_within(other.contract_id, ask_and_collect, 0.3)) is None

        # When the server ends the listener's session, it comes back on a new one and wakes all waiters
        first = _listener_pid(database_url)
        assert first is not None

        def terminate() -> None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (first,))

        took = _run(woken_within(other.contract_id, terminate, 5.0))
        assert took is not None
        assert took < 0.9  # by the reconnection (not by the 1 s reads while down)
        _until(lambda: _listener_pid(database_url) not in (None, first))
        assert listener.reconnects >= 1
        took = _run(woken_within(sup.contract_id, ask_and_collect, 2.0))
        assert took is not None
        assert took < 0.1
        assert listener.waiting() == 0
    finally:
        listener.stop()
    assert _listener_pid(database_url) is None  # stopping closes its connection
