"""A single heartbeat's statement does what the batch statement does with a batch of one (issue 15).

``db/heartbeats.py`` sends a single heartbeat's row as plain parameters (``_INGEST_ONE``) rather than as
nine one-element arrays ``unnest``ed (``_INGEST``, the batch's): the same ``_APPLY`` after a different
``input``. Here both run from the same starting state, drawn by hypothesis (the supervisor's state, its
death, its clean stop, its generation, a waiting sync or restart, the contract's status and activity;
the heartbeat's state, generation, timestamp and pending tasks; the owner filter), each in a transaction
rolled back afterwards, and must return the same rows and leave the same supervisor row, history,
events, contract activity and daemon.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from makima.db import heartbeats
from makima.db.connection import Conn, PooledDatabase, transaction
from makima.services import contracts as contracts_svc
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller

STATES = ["initializing", "working", "waiting_for_user", "completed", "failed"]
CONTRACT_STATUSES = ["active", "paused", "completed", "archived"]


def _normalised(value: Any, now: datetime) -> Any:
    """``value`` with the transaction's ``now()`` (which differs between the two runs) named, and
    database-made ids dropped."""
    if isinstance(value, dict):
        return {k: _normalised(v, now) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_normalised(v, now) for v in value]
    if isinstance(value, datetime) and value == now:
        return "now()"
    return value


def _snapshot(conn: Conn, contract_id: uuid.UUID, task_id: uuid.UUID, daemon_id: uuid.UUID) -> dict[str, Any]:
    def rows(query: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(query, params).fetchall()]

    return {
        "supervisor": rows("SELECT * FROM supervisor_states WHERE task_id = %s", task_id),
        "history": rows(
            "SELECT * FROM supervisor_heartbeats WHERE task_id = %s ORDER BY received_at, sent_at", task_id
        ),
        "events": rows(
            "SELECT type, payload, actor, created_at FROM contract_events WHERE contract_id = %s ORDER BY id",
            contract_id,
        ),
        "contract": rows("SELECT status, last_activity_at, version FROM contracts WHERE id = %s", contract_id),
        "daemon": rows("SELECT status, last_heartbeat_at FROM daemons WHERE id = %s", daemon_id),
    }


def supervised_many(
    db: PooledDatabase, owner: Caller, n: int, name: str
) -> tuple[list[tuple[uuid.UUID, uuid.UUID]], uuid.UUID]:
    """``n`` contracts of ``owner``'s, each with a supervisor, as (contract_id, task_id); and a daemon of
    ``owner``'s named ``name``, marked dead."""
    pairs = []
    for k in range(n):
        contract = contracts_svc.create_contract(
            db, owner.principal, name=f"{name} {k}", description="", contract_type="simple", phase_guard=False
        )
        started = supervisors_svc.start_supervisor(db, owner.principal, contract.id, daemon_id=None)
        pairs.append((contract.id, started.supervisor.task_id))
    with transaction(db) as conn:
        daemon = conn.execute(
            "INSERT INTO daemons (owner_id, name, status) VALUES (%s, %s, 'dead') RETURNING id",
            (owner.principal.user_id, name),
        ).fetchone()
    assert daemon is not None
    return pairs, daemon["id"]


def _supervised(db: PooledDatabase, owner: Caller) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    [(contract_id, task_id)], daemon_id = supervised_many(db, owner, 1, "statements")
    return contract_id, task_id, daemon_id


# A heartbeat that applies: a live supervisor of an active contract, the same generation.
BASE: dict[str, Any] = {
    "old_state": "working",
    "dead": False,
    "stopped_ago_s": None,
    "generation": 1,
    "sync": False,
    "restart": False,
    "contract_status": "active",
    "activity_age_s": 60,
    "state": "working",
    "hb_generation": 1,
    "pending": 1,
    "progress": 50,
    "activity": "working",
    "owner": "own",
    "daemon": True,
}

scenario = st.fixed_dictionaries(
    {
        "old_state": st.sampled_from(STATES),
        "dead": st.booleans(),
        "stopped_ago_s": st.none() | st.integers(-30, 30),  # the clean stop, relative to the heartbeat
        "generation": st.integers(1, 3),
        "sync": st.booleans(),
        "restart": st.booleans(),
        "contract_status": st.sampled_from(CONTRACT_STATUSES),
        "activity_age_s": st.sampled_from([0, 5, 60]),
        "state": st.sampled_from(STATES),
        "hb_generation": st.none() | st.integers(1, 3),
        "pending": st.integers(0, 2),
        "progress": st.integers(0, 100),
        "activity": st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20),
        "owner": st.sampled_from(["any", "own", "other"]),
        "daemon": st.booleans(),
    }
)


def _heartbeat(case: dict[str, Any], task_id: uuid.UUID, contract_id: uuid.UUID, anchor: datetime) -> dict[str, Any]:
    """The case's heartbeat, sent a second before ``anchor``."""
    return {
        "task_id": task_id,
        "contract_id": contract_id,
        "state": case["state"],
        "phase": "plan",
        "current_activity": case["activity"],
        "progress": case["progress"],
        "pending_task_ids": [uuid.uuid5(task_id, str(i)) for i in range(case["pending"])],
        "timestamp": anchor - timedelta(seconds=1),
        "generation": case["hb_generation"],
    }


def _set_up(conn: Conn, case: dict[str, Any], task_id: uuid.UUID, contract_id: uuid.UUID, anchor: datetime) -> datetime:
    """The case's supervisor and contract, in the caller's transaction; returns its ``now()``. Every time
    the setup writes is fixed from ``anchor``: only what the statements write comes from now()."""
    sent = anchor - timedelta(seconds=1)
    now: datetime = conn.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]
    stopped = None if case["stopped_ago_s"] is None else sent - timedelta(seconds=case["stopped_ago_s"])
    conn.execute(
        """
        UPDATE supervisor_states
           SET state = %s, dead_at = %s, stopped_at = %s, generation = %s,
               sync_requested_at = %s, restart_requested_at = %s
         WHERE task_id = %s
        """,
        (
            case["old_state"],
            anchor - timedelta(minutes=5) if case["dead"] else None,
            stopped,
            case["generation"],
            sent - timedelta(seconds=1) if case["sync"] else None,
            anchor if case["restart"] else None,
            task_id,
        ),
    )
    conn.execute(
        "UPDATE contracts SET status = %s, last_activity_at = %s WHERE id = %s",
        (case["contract_status"], anchor - timedelta(seconds=case["activity_age_s"]), contract_id),
    )
    return now


def _read(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """What the service reads of each row an ingest statement returns (the plain ones return no more)."""
    return [{k: r[k] for k in heartbeats.ANSWER_COLUMNS} for r in rows]


def test_one_heartbeat_alone_is_a_batch_of_one(db: PooledDatabase, make_caller: Callable[..., Caller]) -> None:
    owner = make_caller()
    contract_id, task_id, daemon_id = _supervised(db, owner)
    assert heartbeats._INGEST_ONE != heartbeats._INGEST
    seen: set[tuple[bool, bool]] = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(case=scenario)
    # Each branch of the statement at least once, whatever hypothesis draws: applied, late (a finished
    # contract), superseded (an older generation).
    @example(case={**BASE, "old_state": "initializing", "sync": True})
    @example(case={**BASE, "contract_status": "completed"})
    @example(case={**BASE, "generation": 3, "hb_generation": 2})
    def check(case: dict[str, Any]) -> None:
        anchor = datetime.now(UTC)
        row = _heartbeat(case, task_id, contract_id, anchor)
        owner_id = {"any": None, "own": owner.principal.user_id, "other": uuid.uuid4()}[case["owner"]]
        daemon = daemon_id if case["daemon"] else None
        results = []
        for statement in (heartbeats._INGEST, heartbeats._INGEST_ONE):
            conn_cm = db.connection()
            with conn_cm as conn, conn.transaction(force_rollback=True):
                now = _set_up(conn, case, task_id, contract_id, anchor)
                if statement is heartbeats._INGEST:
                    params = heartbeats._ingest_params([row], owner_id, daemon, "statements")
                    answer = conn.execute(statement, params).fetchall()
                else:
                    answer = list(heartbeats.ingest(conn, [row], owner_id, daemon_id=daemon, actor="statements"))
                results.append(
                    _normalised(
                        {
                            "answer": _read(answer),
                            **_snapshot(conn, contract_id, task_id, daemon_id),
                        },
                        now,
                    )
                )
        batch, one = results
        assert one == batch
        if batch["answer"]:
            seen.add((bool(batch["answer"][0]["late"]), bool(batch["answer"][0]["superseded"])))

    check()
    # The cases reached the statement's branches: applied, late, superseded.
    assert {(False, False), (True, False)} <= seen
    assert any(superseded for _, superseded in seen)


def test_a_batch_of_one_is_sent_as_one_heartbeat() -> None:
    """The service's single heartbeats (and batches of one) take ``_INGEST_ONE``; a batch or a daemon's
    bare liveness (no rows) the array statement."""
    one = {
        "task_id": uuid.uuid4(),
        "contract_id": uuid.uuid4(),
        "state": "working",
        "phase": "plan",
        "current_activity": "a",
        "progress": 1,
        "pending_task_ids": [uuid.UUID(int=1)],
        "timestamp": datetime.now(UTC),
    }
    statement = heartbeats._statement([one], None, None, "x")
    assert statement is not None
    text, params = statement
    assert text == heartbeats._INGEST_ONE
    assert params["pending"] == "{00000000-0000-0000-0000-000000000001}"
    assert params["generation"] is None
    for rows, daemon in (([one, one], None), ([], uuid.uuid4())):
        batch = heartbeats._statement(rows, None, daemon, "x")
        assert batch is not None
        assert batch[0] == heartbeats._INGEST
    assert heartbeats._statement([], None, None, "x") is None


def test_a_plain_heartbeat_writes_what_the_full_statement_writes_or_nothing(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    """``_PLAIN_ONE``, sent first for a single heartbeat from no daemon, from the same starting states as
    above: either it returns the rows ``_INGEST_ONE`` returns and leaves what it leaves, or it writes
    nothing (and ``ingest`` sends ``_INGEST_ONE``)."""
    owner = make_caller()
    contract_id, task_id, daemon_id = _supervised(db, owner)
    seen: set[str] = set()

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(case=scenario)
    # Plain, and each way not to be: a new state, dead, stopped, finished, a finished contract, a sync or
    # a restart waiting, an older generation, another owner; plain with a newer generation, an old activity.
    @example(case={**BASE, "daemon": False})
    @example(case={**BASE, "daemon": False, "hb_generation": None, "activity_age_s": 0})
    @example(case={**BASE, "daemon": False, "hb_generation": 3})
    @example(case={**BASE, "daemon": False, "state": "waiting_for_user"})
    @example(case={**BASE, "daemon": False, "dead": True})
    @example(case={**BASE, "daemon": False, "stopped_ago_s": -5})
    @example(case={**BASE, "daemon": False, "stopped_ago_s": 5})
    @example(case={**BASE, "daemon": False, "old_state": "completed", "state": "working"})
    @example(case={**BASE, "daemon": False, "old_state": "failed", "state": "failed"})
    @example(case={**BASE, "daemon": False, "contract_status": "archived"})
    @example(case={**BASE, "daemon": False, "sync": True})
    @example(case={**BASE, "daemon": False, "restart": True})
    @example(case={**BASE, "daemon": False, "generation": 2})
    @example(case={**BASE, "daemon": False, "owner": "other"})
    @example(case={**BASE, "daemon": False, "contract_status": "paused"})
    def check(case: dict[str, Any]) -> None:
        anchor = datetime.now(UTC)
        row = _heartbeat(case, task_id, contract_id, anchor)
        owner_id = {"any": None, "own": owner.principal.user_id, "other": uuid.uuid4()}[case["owner"]]
        daemon = daemon_id if case["daemon"] else None
        plain = heartbeats._plain([row], owner_id, daemon)
        if daemon is not None:
            assert plain is None  # a daemon's heartbeat marks it live: never plain
            return
        assert plain is not None
        assert plain[0] == heartbeats._PLAIN_ONE
        with db.connection() as conn, conn.transaction(force_rollback=True):
            now = _set_up(conn, case, task_id, contract_id, anchor)
            before = _snapshot(conn, contract_id, task_id, daemon_id)
            with conn.transaction(force_rollback=True):
                got = _read(conn.execute(*plain).fetchall())
                after_plain = _snapshot(conn, contract_id, task_id, daemon_id)
            with conn.transaction(force_rollback=True):
                full = _read(heartbeats.ingest(conn, [row], owner_id, actor="statements"))
                after_full = _snapshot(conn, contract_id, task_id, daemon_id)
            with conn.transaction(force_rollback=True):
                statement = heartbeats._statement([row], owner_id, None, "statements")
                assert statement is not None
                alone = _read(conn.execute(*statement).fetchall())
                after_alone = _snapshot(conn, contract_id, task_id, daemon_id)
        # ``ingest`` answers as the full statement alone, whichever it sent.
        assert _normalised({"answer": full, **after_full}, now) == _normalised({"answer": alone, **after_alone}, now)
        if not got:
            seen.add("declined")
            assert after_plain == before
            return
        seen.add("written")
        assert _normalised({"answer": got, **after_plain}, now) == _normalised({"answer": alone, **after_alone}, now)

    check()
    assert seen == {"written", "declined"}
