"""Seed 3.1-3.4, the pure parts: states, the heartbeat message, stored-state consistency, the context."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from makima.domain.supervisors import (
    Heartbeat,
    StoredState,
    SupervisorState,
    check_consistency,
    check_timestamp,
    restoration_context,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_states_serialise_as_snake_case_and_round_trip() -> None:
    assert [s.value for s in SupervisorState] == [
        "initializing", "idle", "working", "waiting_for_user", "waiting_for_tasks",
        "blocked", "completed", "failed", "interrupted",
    ]  # fmt: skip
    for s in SupervisorState:
        assert SupervisorState(json.loads(json.dumps(s.value))) is s


@given(
    state=st.sampled_from(list(SupervisorState)),
    progress=st.integers(0, 100),
    activity=st.text(max_size=50).filter(lambda t: "\x00" not in t),
    pending=st.lists(st.uuids(), max_size=5),
)
def test_heartbeat_message_round_trips_through_json(
    state: SupervisorState, progress: int, activity: str, pending: list[object]
) -> None:
    hb = Heartbeat(
        task_id=uuid4(),
        contract_id=uuid4(),
        state=state,
        phase="execute",
        current_activity=activity,
        progress=progress,
        pending_task_ids=pending,
        timestamp=NOW,
    )
    assert Heartbeat.model_validate_json(hb.model_dump_json()) == hb


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "sleeping"},
        {"progress": 101},
        {"progress": -1},
        {"current_activity": "x" * 2001},
        {"timestamp": "2026-11-24T12:00:00"},
        {"phase": "Not A Slug"},
        {"extra": 1},
    ],
)
def test_bad_heartbeats_do_not_validate(fields: dict[str, object]) -> None:
    base: dict[str, object] = {
        "task_id": str(uuid4()),
        "state": "working",
        "phase": "plan",
        "timestamp": NOW.isoformat(),
    }
    with pytest.raises(ValidationError):
        Heartbeat.model_validate({**base, **fields})


def test_timestamps_from_the_future_or_far_past_are_refused() -> None:
    assert check_timestamp(NOW, NOW) is None
    assert check_timestamp(NOW + timedelta(minutes=1), NOW) is None  # small clock skew is fine
    assert "future" in (check_timestamp(NOW + timedelta(minutes=5), NOW) or "")
    assert "too old" in (check_timestamp(NOW - timedelta(hours=2), NOW) or "")


def _stored(**changes: object) -> StoredState:
    t1, t2 = uuid4(), uuid4()
    base = {
        "state": "working", "phase": "plan", "conversation_length": 3, "conversation_seqs": (0, 1, 2),
        "pending_questions": [], "spawned_task_ids": (t1, t2), "waiting_on_task_ids": (t2,),
        "last_checkpoint": None, "last_save_point": "llm_response", "save_seq": 3, "dead": False,
    }  # fmt: skip
    return StoredState(**{**base, **changes})  # type: ignore[arg-type]


def test_a_consistent_state_passes() -> None:
    s = _stored()
    assert check_consistency(s, contract_phases=["plan", "execute"], known_task_ids=set(s.spawned_task_ids)).ok


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"phase": "review"}, "not a phase"),
        ({"state": "dreaming"}, "unknown state"),
        ({"conversation_seqs": (0, 2)}, "conversation"),
        ({"conversation_length": 5}, "conversation"),
    ],
)
def test_inconsistencies_are_named(changes: dict[str, object], problem: str) -> None:
    s = _stored(**changes)
    verdict = check_consistency(s, contract_phases=["plan", "execute"], known_task_ids=set(s.spawned_task_ids))
    assert not verdict.ok
    assert any(problem in p for p in verdict.problems)


def test_unknown_and_unspawned_tasks_are_inconsistent() -> None:
    s = _stored()
    assert not check_consistency(s, contract_phases=["plan"], known_task_ids=set()).ok
    stray = _stored(waiting_on_task_ids=(uuid4(),))
    verdict = check_consistency(
        stray, contract_phases=["plan"], known_task_ids=set(stray.spawned_task_ids) | set(stray.waiting_on_task_ids)
    )
    assert verdict.problems == ["1 task id(s) waited on were never spawned"]


@pytest.mark.parametrize("mode", ["clean", "crash", "checkpoint", "fresh"])
def test_restoration_context_names_everything_to_resume_with(mode: str) -> None:
    text = restoration_context(
        mode=mode,
        phase="execute",
        state="waiting_for_tasks",
        conversation_length=12,
        redelivered_questions=["Which database?"],
        answers=[("Deadline?", "Friday")],
        waiting_on=["tests"],
        finished_while_away=["lint (completed)"],
        warnings=["the contract moved on"],
    )
    for fragment in (
        "phase 'execute'",
        "12 messages",
        "Which database?",
        "Friday",
        "tests",
        "lint (completed)",
        "the contract moved on",
        "Continue from here.",
    ):
        assert fragment in text
