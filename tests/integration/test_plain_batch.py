"""A batch's plain statement applies what the full statement would, and leaves the rest to it (issue 15).

``db/heartbeats.py: ingest`` sends a batch of heartbeats of distinct supervisors to ``_PLAIN_MANY``
first: it applies the plain ones (a live supervisor of a worked contract, its generation, its state,
nothing waiting) and returns their rows; the others go to the full statement (``_INGEST``), their rows
renumbered to their places in the batch. Here, from starting states drawn by hypothesis for three
supervisors (each as in tests/integration/test_heartbeat_statements.py), ``ingest`` and the full
statement alone, each in a savepoint rolled back afterwards, must answer alike and leave the same
supervisors, history, events, contract activity and daemon. Then what only concurrency shows: two
batches over the same supervisors in opposite orders never deadlock, and a sync asked for while the
batch waits for a supervisor's lock is delivered in that batch's answer.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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

batch_scenario = st.fixed_dictionaries(
    {
        "cases": st.lists(one_scenario, min_size=SUPERVISORS, max_size=SUPERVISORS),
        "owner": st.sampled_from(["any", "own", "other"]),
        "daemon": st.booleans(),
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


def _answers(rows: list[Any]) -> list[dict[str, Any]]:
    """What the service reads of the rows, in the batch's order."""
    return sorted(({k: r[k] for k in heartbeats.ANSWER_COLUMNS} for r in rows), key=lambda r: r["ord"])


def test_a_plain_batch_does_what_the_full_statement_does(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    supervised, daemon_id = supervised_many(db, owner, SUPERVISORS, "batch")
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(batch=batch_scenario)
    # All plain, with and without a daemon; each way for one of three not to be; none plain; twice.
    @example(batch={"cases": [PLAIN] * 3, "owner": "own", "daemon": False, "twice": False})
    @example(batch={"cases": [PLAIN] * 3, "owner": "any", "daemon": True, "twice": False})
    @example(batch={"cases": [PLAIN, OTHERS[0], PLAIN], "owner": "own", "daemon": True, "twice": False})
    @example(batch={"cases": [PLAIN, PLAIN, OTHERS[1]], "owner": "own", "daemon": False, "twice": False})
    @example(batch={"cases": [OTHERS[2], PLAIN, PLAIN], "owner": "own", "daemon": False, "twice": False})
    @example(batch={"cases": [PLAIN, OTHERS[3], PLAIN], "owner": "any", "daemon": True, "twice": False})
    @example(batch={"cases": [OTHERS[4], PLAIN, PLAIN], "owner": "own", "daemon": False, "twice": False})
    @example(batch={"cases": [PLAIN, OTHERS[5], OTHERS[6]], "owner": "own", "daemon": False, "twice": False})
    @example(batch={"cases": [OTHERS[7], OTHERS[8], PLAIN], "owner": "own", "daemon": True, "twice": False})
    @example(batch={"cases": OTHERS[:3], "owner": "own", "daemon": True, "twice": False})
    @example(batch={"cases": [PLAIN] * 3, "owner": "other", "daemon": True, "twice": False})
    @example(batch={"cases": [PLAIN] * 3, "owner": "own", "daemon": False, "twice": True})
    def check(batch: dict[str, Any]) -> None:
        anchor = datetime.now(UTC)
        rows = [
            _heartbeat(case, task_id, contract_id, anchor)
            for case, (contract_id, task_id) in zip(batch["cases"], supervised, strict=True)
        ]
        if batch["twice"]:
            rows.append({**rows[0], "timestamp": rows[0]["timestamp"] + timedelta(milliseconds=500)})
        owner_id = {"any": None, "own": owner.principal.user_id, "other": uuid.uuid4()}[batch["owner"]]
        daemon = daemon_id if batch["daemon"] else None

        def snapshot(conn: Conn) -> list[dict[str, Any]]:
            return [_snapshot(conn, c, t, daemon_id) for c, t in supervised]

        with db.connection() as conn, conn.transaction(force_rollback=True):
            now = max(_set_up(conn, c, t, k, anchor) for c, (k, t) in zip(batch["cases"], supervised, strict=True))
            with conn.transaction(force_rollback=True):
                statement = heartbeats._statement(rows, owner_id, daemon, "statements")
                assert statement is not None
                alone = _normalised(
                    {"answer": _answers(conn.execute(*statement).fetchall()), "db": snapshot(conn)}, now
                )
            with conn.transaction(force_rollback=True):
                plain = heartbeats._plain(rows, owner_id, daemon)
                applied = conn.execute(*plain).fetchall() if plain is not None else []
            with conn.transaction(force_rollback=True):
                got = heartbeats.ingest(conn, rows, owner_id, daemon_id=daemon, actor="statements")
                both = _normalised({"answer": _answers(got), "db": snapshot(conn)}, now)
        assert both == alone
        if plain is None:
            seen.add("not sent")
        else:
            assert plain[0] == heartbeats._PLAIN_MANY
            seen.add({0: "none", len(rows): "all"}.get(len(applied), "some"))

    check()
    assert seen == {"not sent", "none", "some", "all"}


def _fleet(db: PooledDatabase, owner: Caller, n: int) -> list[dict[str, Any]]:
    """``n`` supervisors in the state a steady heartbeat finds them (working), as heartbeat rows."""
    pairs, _ = supervised_many(db, owner, n, "fleet")
    rows = [_heartbeat({**PLAIN, "hb_generation": None}, t, c, datetime.now(UTC)) for c, t in pairs]
    with db.connection() as conn:
        heartbeats.ingest(conn, rows, owner.principal.user_id)  # initializing -> working
    return rows


def test_batches_over_the_same_supervisors_in_opposite_orders_never_deadlock(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    """The plain statement locks in task_id order, whatever the batch's order: two batches over the same
    supervisors, sent at once in opposite orders again and again, all apply (a deadlock would fail one
    of them after PostgreSQL's deadlock_timeout)."""
    owner = make_caller()
    rows = _fleet(db, owner, 30)
    barrier = threading.Barrier(2)

    def send(order: list[dict[str, Any]]) -> int:
        applied = 0
        try:
            for _ in range(25):
                beats = [{**r, "timestamp": datetime.now(UTC)} for r in order]
                barrier.wait()
                with db.connection() as conn:
                    got = heartbeats.ingest(conn, beats, owner.principal.user_id)
                applied += sum(not r["superseded"] for r in got)
        except BaseException:
            barrier.abort()  # the other sender stops waiting for this one
            raise
        return applied

    with ThreadPoolExecutor(2) as pool:
        results = [pool.submit(send, rows), pool.submit(send, rows[::-1])]
        assert [f.result(timeout=120) for f in results] == [25 * 30] * 2
    with db.connection() as conn:
        counts = conn.execute(
            "SELECT heartbeat_count FROM supervisor_states WHERE task_id = ANY(%s)", ([r["task_id"] for r in rows],)
        ).fetchall()
    assert [c["heartbeat_count"] for c in counts] == [1 + 50] * 30


def test_a_sync_asked_for_while_the_batch_waits_is_delivered_in_its_answer(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    """The batch waits for one supervisor's lock, held by a transaction that asks that supervisor for a
    sync: once it commits, the plain statement sees the request and leaves the row, and the full
    statement delivers it (``sync_requested`` in its answer, ``sync_delivered_at`` set); the others were
    applied plainly."""
    owner = make_caller()
    rows = _fleet(db, owner, 3)
    held = rows[1]["task_id"]

    def send() -> list[dict[str, Any]]:
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
        row = conn.execute(
            "SELECT sync_requested_at, sync_delivered_at FROM supervisor_states WHERE task_id = %s", (held,)
        ).fetchone()
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
