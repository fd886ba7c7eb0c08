"""A plain state save's one statement does what the transactional save does, or nothing (issue 15).

``services/supervisors.py: save_state`` first sends ``db/supervisors.py: save_if_plain``: one statement
that locks the contract's supervisor, checks that the save is plain (the supervisor's generation, the
next sequence number within its step, the messages appended at the end of the kept conversation, the
state unchanged, the size known and within the cap) and, only then, writes it. Any other save is decided
by the transaction (``save_locked``), the save of before. Here both run from the same starting state,
drawn by hypothesis, each in a savepoint rolled back afterwards: when the statement writes, the
transaction succeeds from that state and leaves the same supervisor row, conversation, contract
activity and events; when it does not, it has left everything as it was. And saves racing for the same
sequence number: one wins, the others are refused, and one message is appended.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from makima.db import supervisors as supervisors_sql
from makima.db.connection import Conn, PooledDatabase, transaction
from makima.domain.bounds import MAX_SEQ_STEP
from makima.domain.supervisors import CHECKPOINT_SAVE_POINTS, SavedState, SavePoint, SupervisorState
from makima.errors import Conflict, MakimaError
from makima.services import contracts as contracts_svc
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller

pytestmark = pytest.mark.integration

STATES = ["initializing", "working", "waiting_for_user"]


def _message(seq: int, pad: int) -> dict[str, Any]:
    return {"role": "assistant", "content": f"m{seq}", "pad": "x" * pad}


def _normalised(snapshot: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The transaction's ``now()`` named; the save's own clock (a clean stop's ``stopped_at``, a
    checkpoint's ``at``: read by each run apart) reduced to whether it is set."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("set" if k == "at" else norm(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, datetime) and value == now:
            return "now()"
        return value

    out: dict[str, Any] = norm(snapshot)
    for row in out["supervisor"]:
        row["stopped_at"] = row["stopped_at"] is not None
    return out


def _snapshot(conn: Conn, contract_id: uuid.UUID, task_id: uuid.UUID) -> dict[str, Any]:
    def rows(query: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(query, params).fetchall()]

    return {
        "supervisor": rows("SELECT * FROM supervisor_states WHERE task_id = %s", task_id),
        "conversation": rows(
            "SELECT seq, message FROM supervisor_conversation WHERE task_id = %s ORDER BY seq", task_id
        ),
        "events": rows("SELECT type, payload FROM contract_events WHERE contract_id = %s ORDER BY id", contract_id),
        "contract": rows("SELECT status, last_activity_at, version FROM contracts WHERE id = %s", contract_id),
    }


def _supervised(db: PooledDatabase, owner: Caller) -> tuple[uuid.UUID, uuid.UUID]:
    contract = contracts_svc.create_contract(
        db, owner.principal, name="plain saves", description="", contract_type="simple", phase_guard=False
    )
    task_id = supervisors_svc.start_supervisor(db, owner.principal, contract.id, daemon_id=None).supervisor.task_id
    return contract.id, task_id


# A plain save: the next sequence number, one message appended at the end, the state as it was.
BASE: dict[str, Any] = {
    "old_state": "working",
    "generation": 1,
    "save_seq": 3,
    "start": 0,
    "length": 3,
    "bytes_known": True,
    "save_generation": 1,
    "seq_step": 1,
    "offset_from_end": 0,
    "append": 1,
    "state": "working",
    "save_point": "llm_response",
    "checkpoint": False,
    "cap": "large",
    "owner": "own",
    "activity_age_s": 60,
}

scenario = st.fixed_dictionaries(
    {
        "old_state": st.sampled_from(STATES),
        "generation": st.integers(1, 2),
        "save_seq": st.integers(0, 4),
        "start": st.integers(0, 2),
        "length": st.integers(0, 3),  # kept messages after ``start``
        "bytes_known": st.booleans(),
        "save_generation": st.integers(1, 2),
        "seq_step": st.sampled_from([-1, 0, 1, 2, MAX_SEQ_STEP, MAX_SEQ_STEP + 1]),
        "offset_from_end": st.integers(-4, 1),  # where the append starts, from the conversation's end
        "append": st.integers(0, 2),
        "state": st.sampled_from(STATES),
        "save_point": st.sampled_from([p.value for p in SavePoint]),
        "checkpoint": st.booleans(),
        "cap": st.sampled_from(["large", "reached", "tight"]),
        "owner": st.sampled_from(["own", "other"]),
        "activity_age_s": st.sampled_from([0, 9, 11, 60]),  # the contract's, against its 10 s resolution
    }
)


def test_a_plain_save_writes_what_the_transaction_writes_or_nothing(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner, stranger = make_caller(), make_caller()
    contract_id, task_id = _supervised(db, owner)
    seen: set[str] = set()

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(case=scenario)
    # Each way, whatever hypothesis draws: written; declined for the state changing, a stale sequence,
    # the cap, a size not known, an append before the kept conversation, another owner's contract, an
    # older generation, an append short of the end (a retry).
    @example(case=BASE)
    @example(case={**BASE, "state": "waiting_for_user"})
    @example(case={**BASE, "seq_step": 0})
    @example(case={**BASE, "cap": "tight"})
    @example(case={**BASE, "bytes_known": False})
    @example(case={**BASE, "start": 2, "length": 0, "offset_from_end": -1, "append": 2})
    @example(case={**BASE, "owner": "other"})
    @example(case={**BASE, "save_generation": 2})
    @example(case={**BASE, "offset_from_end": -2, "append": 1})
    @example(case={**BASE, "save_point": "shutdown", "append": 0})
    @example(case={**BASE, "checkpoint": True})
    def check(case: dict[str, Any]) -> None:
        start, length = case["start"], case["start"] + case["length"]
        kept = {seq: _message(seq, 40) for seq in range(start, length)}
        offset = max(0, length + case["offset_from_end"])
        append = [_message(offset + i, 60) for i in range(case["append"])]
        save = supervisors_svc.StateSave(
            generation=case["save_generation"],
            seq=case["save_seq"] + case["seq_step"],
            save_point=SavePoint(case["save_point"]),
            state=SupervisorState(case["state"]),
            phase="plan",
            current_activity="saving",
            conversation_offset=offset,
            conversation_append=append,
            pending_questions=[],
            spawned_task_ids=[],
            waiting_on_task_ids=[],
            error=None,
            checkpoint=case["checkpoint"],
        )
        caller = owner if case["owner"] == "own" else stranger
        with db.connection() as conn, conn.transaction(force_rollback=True):
            now = conn.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]
            conn.execute("DELETE FROM supervisor_conversation WHERE task_id = %s", (task_id,))
            for seq, message in kept.items():
                conn.execute(
                    "INSERT INTO supervisor_conversation (task_id, seq, message) VALUES (%s, %s, %s::jsonb)",
                    (task_id, seq, Jsonb(message)),
                )
            size = conn.execute(
                "SELECT COALESCE(sum(octet_length(message::text)), 0) AS n FROM supervisor_conversation"
                " WHERE task_id = %s",
                (task_id,),
            ).fetchone()["n"]  # type: ignore[index]
            conn.execute(
                """
                UPDATE supervisor_states
                   SET state = %s, generation = %s, save_seq = %s, conversation_start = %s,
                       conversation_length = %s, conversation_bytes = %s
                 WHERE task_id = %s
                """,
                (
                    case["old_state"],
                    case["generation"],
                    case["save_seq"],
                    start,
                    length,
                    size if case["bytes_known"] else None,
                    task_id,
                ),
            )
            conn.execute(
                "UPDATE contracts SET last_activity_at = %s WHERE id = %s",
                (now - timedelta(seconds=case["activity_age_s"]), contract_id),
            )
            # "reached": exactly full once the append is stored; "tight": one byte short of that.
            added = conn.execute(
                "SELECT COALESCE(sum(octet_length(m::text)), 0) AS n FROM jsonb_array_elements(%s) AS m(m)",
                (supervisors_sql._messages(append),),
            ).fetchone()["n"]  # type: ignore[index]
            cap = {"large": 1 << 30, "reached": size + added, "tight": size + added - 1}[case["cap"]]
            before = _snapshot(conn, contract_id, task_id)

            with conn.transaction(force_rollback=True):
                plain = supervisors_svc._plain(caller.principal, contract_id, save, cap)
                row = supervisors_sql.save_if_plain(conn, plain.guard, plain.fields, touch=plain.touch)
                after_plain = _snapshot(conn, contract_id, task_id)
            with conn.transaction(force_rollback=True):
                try:
                    saved: Any = supervisors_svc.save_locked(
                        conn, caller.principal, contract_id, save, max_conversation_bytes=cap
                    )
                except MakimaError as exc:
                    saved = exc
                after_transaction = _snapshot(conn, contract_id, task_id)

        if row is None:
            seen.add("declined")
            assert after_plain == before
            return
        seen.add("written")
        assert not isinstance(saved, MakimaError), saved
        assert _normalised(after_plain, now) == _normalised(after_transaction, now)
        # The same answer (the plain statement returns only its columns: db/supervisors.py, _SAVED_COLUMNS).
        assert SavedState.model_validate(row) == saved
        if save.checkpoint or save.save_point in CHECKPOINT_SAVE_POINTS:
            seen.add("written with a checkpoint")
            assert saved.last_checkpoint_seq == save.seq

    check()
    assert seen == {"written", "written with a checkpoint", "declined"}


def test_saves_racing_for_one_sequence_number_append_once(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    """Eight plain saves of the same sequence number at once: one is written, the seven others are
    refused as stale (the statement waits for the lock, then sees the winner's row), and the
    conversation holds the one message."""
    owner = make_caller()
    contract_id, task_id = _supervised(db, owner)
    with transaction(db) as conn:
        conn.execute(
            "UPDATE supervisor_states SET state = 'working', conversation_bytes = 0 WHERE task_id = %s", (task_id,)
        )

    def save(n: int) -> Any:
        s = supervisors_svc.StateSave(
            generation=1,
            seq=1,
            save_point=SavePoint.LLM_RESPONSE,
            state=SupervisorState.WORKING,
            phase="plan",
            current_activity=f"racer {n}",
            conversation_offset=0,
            conversation_append=[_message(0, n)],
            pending_questions=[],
            spawned_task_ids=[],
            waiting_on_task_ids=[],
            error=None,
            checkpoint=False,
        )
        try:
            return supervisors_svc.save_state(db, owner.principal, contract_id, s)
        except Conflict as exc:
            return exc

    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(save, range(8)))
        won = [r for r in results if not isinstance(r, Conflict)]
        assert len(won) == 1
        assert all(r.details["reason"] == "stale_sequence" for r in results if isinstance(r, Conflict))
        with db.connection() as conn:
            stored = conn.execute(
                "SELECT seq, octet_length(message::text) AS size, length(message->>'pad') AS pad"
                " FROM supervisor_conversation WHERE task_id = %s",
                (task_id,),
            ).fetchall()
            sup = conn.execute("SELECT * FROM supervisor_states WHERE task_id = %s", (task_id,)).fetchone()
        assert len(stored) == 1
        assert sup is not None
        assert (sup["save_seq"], sup["conversation_length"]) == (1, 1)
        assert sup["updated_at"] == won[0].updated_at
        # The winner's state and message both (one save's writes, not two racers' mixed).
        assert sup["current_activity"] == f"racer {stored[0]['pad']}"
        assert sup["conversation_bytes"] == stored[0]["size"]
        with transaction(db) as conn:  # the next round races from the start again
            conn.execute("DELETE FROM supervisor_conversation WHERE task_id = %s", (task_id,))
            conn.execute(
                "UPDATE supervisor_states SET save_seq = 0, conversation_length = 0, conversation_bytes = 0"
                " WHERE task_id = %s",
                (task_id,),
            )


def test_messages_are_stored_as_sent(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    """The appended messages go to PostgreSQL as one JSON array (``db/supervisors.py: _messages``):
    quotes, backslashes, non-ASCII text, nesting, numbers and nulls read back as they were sent, over
    the plain statement and the transaction alike."""
    contract = new_contract(user, name="plain-messages")["id"]
    r = client.post(f"/api/v1/contracts/{contract}/supervisor", json={}, headers=user.headers)
    assert r.status_code == 201, r.text
    url = f"/api/v1/contracts/{contract}/supervisor/state"
    tricky: list[dict[str, Any]] = [
        {"role": "user", "content": 'say "hi" \\ then {"a": [1, 2]}'},
        {"role": "assistant", "content": "ünïcödé ✓ 日本語 \t\n", "tool": {"args": [None, True, 1.5, -2]}},
        {"role": "tool", "content": "", "nested": {"x": {"y": {"z": ["\\\\", "'", '"']}}}},
    ]
    sent: list[dict[str, Any]] = []
    for seq, state in [
        (1, "working"),
        (2, "working"),
        (3, "waiting_for_user"),
    ]:  # transaction (a new state), plain, transaction
        body = {
            "generation": 1, "seq": seq, "save_point": "llm_response", "state": state, "phase": "plan",
            "conversation_offset": len(sent), "conversation_append": tricky,
        }  # fmt: skip
        r = client.put(url, json=body, headers=user.headers)
        assert r.status_code == 200, r.text
        sent += tricky
    state = client.get(url, headers=user.headers).json()
    assert state["conversation_history"] == sent


@pytest.mark.parametrize("plain", [True, False])
def test_a_save_refreshes_the_contract_activity_at_most_every_ten_seconds(
    db: PooledDatabase, make_caller: Callable[..., Caller], plain: bool
) -> None:
    """As a heartbeat does (db/contracts.py: ACTIVITY_RESOLUTION): a save moves ``last_activity_at``
    when it is more than 10 s old, and leaves the contract's row alone otherwise (rewriting it rewrites
    its every index); a ``heartbeat`` save point never moves it."""
    owner = make_caller()
    contract_id, task_id = _supervised(db, owner)
    with transaction(db) as conn:
        conn.execute(
            "UPDATE supervisor_states SET state = 'working', conversation_bytes = 0 WHERE task_id = %s", (task_id,)
        )

    def activity() -> tuple[datetime, str]:
        with db.connection() as conn:
            row = conn.execute(
                "SELECT last_activity_at, xmin::text AS version FROM contracts WHERE id = %s", (contract_id,)
            ).fetchone()
        assert row is not None
        return row["last_activity_at"], row["version"]

    def save(seq: int, point: SavePoint = SavePoint.LLM_RESPONSE) -> None:
        # A new state is not plain: the transaction saves it.
        state = (
            SupervisorState.WORKING if plain else [SupervisorState.WORKING, SupervisorState.WAITING_FOR_USER][seq % 2]
        )
        s = supervisors_svc.StateSave(
            generation=1, seq=seq, save_point=point, state=state, phase="plan", current_activity="",
            conversation_offset=seq - 1, conversation_append=[_message(seq, 1)], pending_questions=[],
            spawned_task_ids=[], waiting_on_task_ids=[], error=None, checkpoint=False,
        )  # fmt: skip
        supervisors_svc.save_state(db, owner.principal, contract_id, s)

    for seq, (age_s, point, moves) in enumerate(
        [
            (60, SavePoint.LLM_RESPONSE, True),
            (11, SavePoint.LLM_RESPONSE, True),
            (5, SavePoint.LLM_RESPONSE, False),
            (0, SavePoint.LLM_RESPONSE, False),
            (60, SavePoint.HEARTBEAT, False),
        ],
        start=1,
    ):
        with transaction(db) as conn:
            conn.execute(
                "UPDATE contracts SET last_activity_at = now() - make_interval(secs => %s) WHERE id = %s",
                (age_s, contract_id),
            )
        before = activity()
        save(seq, point)
        after = activity()
        if moves:
            assert after[0] > before[0], (seq, age_s)
            assert after[1] != before[1]
        else:
            assert after == before, (seq, age_s, point)
