"""A batch's plain statement applies the batch as the full statement would, or writes nothing (issue 15).

``db/heartbeats.py: ingest`` sends a batch of heartbeats of distinct supervisors to ``_PLAIN_MANY``
first: when every heartbeat in it is plain (a live supervisor of a worked contract, its generation, its
state, nothing waiting) it applies them all and returns their rows; otherwise it writes nothing and the
full statement (``_INGEST``) takes the whole batch, so one statement applies a batch. Here, from starting
states drawn by hypothesis for three supervisors (each as in tests/integration/test_heartbeat_statements.py),
``ingest``, the plain statement and the full statement alone, each in a savepoint rolled back afterwards,
must answer alike and leave the same supervisors, history, events, contract activity and daemon, or (the
plain statement) leave everything as it was. Then what only concurrency shows: two batches over the same
supervisors in opposite orders never deadlock, and a sync asked for while the batch waits for a
supervisor's lock is delivered in that batch's answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import pq
from psycopg.rows import dict_row

from makima.db import heartbeats
from makima.db.connection import Conn, PooledDatabase
from tests.conftest import Caller
from tests.integration.test_heartbeat_statements import (
    BASE,
    _heartbeat,
    _normalised,
    _set_up,
    _snapshot,
    supervised_many,
)
from tests.integration.test_heartbeat_statements import scenario as one_scenario

pytestmark = pytest.mark.integration

SUPERVISORS = 3
T = TypeVar("T")
ROUNDS = 40  # of the two racing senders

batch_scenario = st.fixed_dictionaries(
    {
        "cases": st.lists(one_scenario, min_size=SUPERVISORS, max_size=SUPERVISORS),
        "owner": st.sampled_from(["any", "own", "other"]),
        "daemon": st.sampled_from(["none", "own", "foreign"]),  # the batch's daemon: none, owner's, another's
        "twice": st.booleans(),  # the first supervisor's heartbeat sent again, a second later
    }
)
PLAIN = {**BASE, "daemon": False}
OTHERS = [
    {**PLAIN, "state": "waiting_for_user"},  # a new state: an event
    {**PLAIN, "sync": True},  # a sync to deliver
    {**PLAIN, "generation": 3, "hb_generation": 2},  # superseded
    {**PLAIN, "contract_status": "completed"},  # late
    {**PLAIN, "dead": True},  # back from the dead
    {**PLAIN, "old_state": "failed", "state": "failed"},  # finished: late
    {**PLAIN, "stopped_ago_s": 5},  # stopped cleanly before it was sent: back
    {**PLAIN, "stopped_ago_s": -5},  # sent before its clean stop: late
    {**PLAIN, "restart": True},  # a restart to deliver
]


def _answers(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """What the service reads of the rows, in the batch's order."""
    return sorted(({k: r[k] for k in heartbeats.ANSWER_COLUMNS} for r in rows), key=lambda r: r["ord"])


def test_a_plain_batch_does_what_the_full_statement_does(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    supervised, daemon_id = supervised_many(db, owner, SUPERVISORS, "batch")

    foreign_daemon = supervised_many(db, make_caller(), 0, "foreign")[1]
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(batch=batch_scenario)
    # All plain: with each daemon, any owner or the owner or another; twice.
    @example(batch={"cases": [PLAIN] * 3, "owner": "own", "daemon": "none", "twice": False})
    @example(batch={"cases": [PLAIN] * 3, "owner": "any", "daemon": "own", "twice": False})
    @example(batch={"cases": [PLAIN] * 3, "owner": "own", "daemon": "foreign", "twice": False})
    @example(batch={"cases": [PLAIN] * 3, "owner": "other", "daemon": "own", "twice": False})
    @example(batch={"cases": [PLAIN] * 3, "owner": "own", "daemon": "none", "twice": True})
    @example(batch={"cases": OTHERS[:3], "owner": "own", "daemon": "own", "twice": False})
    def check(batch: dict[str, Any]) -> None:
        anchor = datetime.now(UTC)
        rows = [
            _heartbeat(case, task_id, contract_id, anchor)
            for case, (contract_id, task_id) in zip(batch["cases"], supervised, strict=True)
        ]
        if batch["twice"]:
            rows.append({**rows[0], "timestamp": rows[0]["timestamp"] + timedelta(milliseconds=500)})
        owner_id = {"any": None, "own": owner.principal.user_id, "other": uuid.uuid4()}[batch["owner"]]
        daemon = {"none": None, "own": daemon_id, "foreign": foreign_daemon}[batch["daemon"]]

        def snapshot(conn: Conn) -> list[dict[str, Any]]:
            foreign = _snapshot(conn, *supervised[0], foreign_daemon)["daemon"]
            return [_snapshot(conn, c, t, daemon_id) for c, t in supervised] + [foreign]

        with db.connection() as conn, conn.transaction(force_rollback=True):
            now = max(_set_up(conn, c, t, k, anchor) for c, (k, t) in zip(batch["cases"], supervised, strict=True))
            with conn.transaction(force_rollback=True):
                statement = heartbeats._statement(rows, owner_id, daemon, "statements")
                assert statement is not None
                alone = _normalised(
                    {"answer": _answers(conn.execute(*statement).fetchall()), "db": snapshot(conn)}, now
                )
            before = snapshot(conn)
            with conn.transaction(force_rollback=True):
                plain = heartbeats._plain(rows, owner_id, daemon)
                applied = heartbeats._plain_batch(conn.execute(*plain).fetchone(), plain[1]) if plain else None
                after_plain = snapshot(conn)
            with conn.transaction(force_rollback=True):
                got = heartbeats.ingest(conn, rows, owner_id, daemon_id=daemon, actor="statements")
                both = _normalised({"answer": _answers(got), "db": snapshot(conn)}, now)
        assert both == alone
        if plain is None:
            seen.add("not sent")
            return
        assert plain[0] == heartbeats._PLAIN_MANY
        if applied is not None:  # all of the batch, as the full statement alone would
            assert isinstance(got, heartbeats.PlainBatch)
            assert len(applied) == len(rows)
            assert _normalised({"answer": _answers(applied), "db": after_plain}, now) == alone
            seen.add("all")
        else:  # or nothing at all (the full statement then applies the batch)
            assert after_plain == before
            seen.add("none")

    # Each way for one heartbeat of three not to be plain, in each place, from the owner's daemon or none.
    for k, other in enumerate(OTHERS):
        cases = [PLAIN, PLAIN, PLAIN]
        cases[k % 3] = other
        daemon = ("none", "own")[k % 2]
        check = example(batch={"cases": cases, "owner": "own", "daemon": daemon, "twice": False})(check)
    check()
    assert seen == {"not sent", "none", "all"}


def _fleet(db: PooledDatabase, owner: Caller, n: int) -> list[dict[str, Any]]:
    """``n`` supervisors in the state a steady heartbeat finds them (working), as heartbeat rows."""
    pairs, _ = supervised_many(db, owner, n, "fleet")
    rows = [_heartbeat({**PLAIN, "hb_generation": None}, t, c, datetime.now(UTC)) for c, t in pairs]
    with db.connection() as conn:
        heartbeats.ingest(conn, rows, owner.principal.user_id)  # initializing -> working
    return rows


def test_batches_over_the_same_supervisors_in_opposite_orders_never_deadlock(
    db: PooledDatabase, database_url: str, make_caller: Callable[..., Caller]
) -> None:
    """The plain statement locks in task_id order, whatever the batch's order: two batches over the same
    supervisors, sent at once in opposite orders again and again, all apply (a deadlock would fail one
    of them after PostgreSQL's deadlock_timeout). Each sender has a new connection of its own, so the
    plan is not one that other tests' statements had the pool's connections prepare (a plan that
    happens to lock in the table's order hides a missing order)."""
    owner = make_caller()
    rows = _fleet(db, owner, 30)
    barrier = threading.Barrier(2)

    def send(order: list[dict[str, Any]]) -> int:
        applied = 0
        try:
            with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
                for _ in range(ROUNDS):
                    beats = [{**r, "timestamp": datetime.now(UTC)} for r in order]
                    barrier.wait()
                    got = heartbeats.ingest(conn, beats, owner.principal.user_id)
                    applied += sum(not r["superseded"] for r in got)
        except BaseException:
            barrier.abort()  # the other sender stops waiting for this one
            raise
        return applied

    with ThreadPoolExecutor(2) as pool:
        results = [pool.submit(send, rows), pool.submit(send, rows[::-1])]
        assert [f.result(timeout=120) for f in results] == [ROUNDS * 30] * 2
    with db.connection() as conn:
        counts = conn.execute(
            "SELECT heartbeat_count FROM supervisor_states WHERE task_id = ANY(%s)", ([r["task_id"] for r in rows],)
        ).fetchall()
    assert [c["heartbeat_count"] for c in counts] == [1 + 2 * ROUNDS] * 30


def test_a_sync_asked_for_while_the_batch_waits_is_delivered_in_its_answer(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    """The batch waits for one supervisor's lock, held by a transaction that asks that supervisor for a
    sync: once it commits, the plain statement sees the request, so the batch is not plain and it writes
    nothing; the full statement applies the batch, each heartbeat once, and delivers the sync
    (``sync_requested`` in its answer, ``sync_delivered_at`` set)."""
    owner = make_caller()
    rows = _fleet(db, owner, 3)
    held = rows[1]["task_id"]

    def send() -> Sequence[dict[str, Any]]:
        with db.connection() as conn:
            return heartbeats.ingest(conn, [{**r, "timestamp": datetime.now(UTC)} for r in rows], None)

    with ThreadPoolExecutor(1) as pool:
        with db.connection() as locker, locker.transaction():
            locker.execute("SELECT 1 FROM supervisor_states WHERE task_id = %s FOR UPDATE", (held,))
            future = pool.submit(send)
            _wait_for_a_lock_wait(locker)
            locker.execute("UPDATE supervisor_states SET sync_requested_at = now() WHERE task_id = %s", (held,))
        # committed: the batch goes on
        answer = future.result(timeout=30)
    got = {r["ord"]: r for r in answer}
    assert sorted(got) == [1, 2, 3]
    assert [bool(got[k]["sync_requested"]) for k in (1, 2, 3)] == [False, True, False]
    with db.connection() as conn:
        counts = conn.execute(
            "SELECT heartbeat_count FROM supervisor_states WHERE task_id = ANY(%s)", ([r["task_id"] for r in rows],)
        ).fetchall()
        row = conn.execute(
            "SELECT sync_requested_at, sync_delivered_at FROM supervisor_states WHERE task_id = %s", (held,)
        ).fetchone()
    assert [c["heartbeat_count"] for c in counts] == [2, 2, 2]  # the fleet's first heartbeat, then this one
    assert row is not None
    assert row["sync_requested_at"] is None
    assert row["sync_delivered_at"] is not None


def _wait_for_a_lock_wait(conn: Conn) -> None:
    """Until some other session of this database waits for a row lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            """
            SELECT count(*) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
            """
        ).fetchone()
        if row is not None and row["n"] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the batch never waited for the lock")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine`` on an event loop of its own. Not ``asyncio.run``: it leaves the main thread without
    a current loop for good, and the Lambda handlers' tests later in the session (Mangum) ask for one."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def test_the_answer_is_prepared_while_the_plain_statement_runs(
    database_url: str, db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    """``ingest_on_loop``'s ``meanwhile`` runs once the batch's plain statement is on its way (the
    connection has a command in progress), not before it is sent nor after its answer; it is not called
    for a batch that goes to the full statement first. A ``meanwhile`` that raises still leaves the
    statement awaited and the connection idle, as the worker-thread path leaves it when its answer fails
    after the statement."""
    owner = make_caller()
    rows = _fleet(db, owner, 3)
    in_flight: list[int] = []

    async def run(batch: list[dict[str, Any]], meanwhile: Callable[[], object]) -> Sequence[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
            try:
                return await heartbeats.ingest_on_loop(conn, batch, owner.principal.user_id, meanwhile=meanwhile)
            finally:
                in_flight.append(conn.pgconn.transaction_status)  # after: idle again

    def now(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "timestamp": datetime.now(UTC)} for r in batch]

    seen: list[int] = []

    async def watched(batch: list[dict[str, Any]]) -> Sequence[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True, row_factory=dict_row) as conn:

            def look() -> None:
                seen.append(conn.pgconn.transaction_status)

            return await heartbeats.ingest_on_loop(conn, batch, owner.principal.user_id, meanwhile=look)

    got = _run(watched(now(rows)))
    assert isinstance(got, heartbeats.PlainBatch)
    assert seen == [pq.TransactionStatus.ACTIVE]  # sent, its answer not read yet
    seen.clear()
    changed = now(rows)
    changed[0] = {**changed[0], "state": "blocked"}
    got = _run(watched(changed))  # not plain: the plain statement wrote nothing, the full one applied it
    assert not isinstance(got, heartbeats.PlainBatch)
    assert [r["new_state"] for r in sorted(got, key=lambda r: r["ord"])] == ["blocked", "working", "working"]
    assert seen == [pq.TransactionStatus.ACTIVE]  # called while the plain attempt ran
    seen.clear()
    _run(watched(now(rows[:1])))  # one heartbeat from no daemon: its own small statement, no batch
    assert seen == []

    def fail() -> None:
        raise ValueError("the answer could not be prepared")

    with pytest.raises(ValueError, match="could not be prepared"):
        _run(run(now(rows), fail))
    assert in_flight == [pq.TransactionStatus.IDLE]
