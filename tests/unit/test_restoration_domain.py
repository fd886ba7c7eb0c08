"""Seed 3.4's decisions, pure: which mode a restored supervisor comes back in and which state it
resumes from (``domain/supervisors.py``: ``plan_restoration``, ``resume``); and the SDK's pacing by the
service's heartbeat interval and its adoption of adoptable supervisors (no network: a fake API)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest

from makima.client.api import ApiError
from makima.client.daemon import Daemon
from makima.client.heartbeat import DEFAULT_INTERVAL, HeartbeatAnswer, HeartbeatLoop
from makima.domain.supervisors import (
    NO_SAVED_STATE,
    NO_USABLE_CHECKPOINT,
    RestoreMode,
    StoredState,
    plan_restoration,
    restore_mode,
    resume,
)

pytestmark = pytest.mark.unit
PHASES = ["plan", "execute", "review"]
T1, T2 = uuid4(), uuid4()


def stored(**fields: Any) -> StoredState:
    base = StoredState(
        state="working",
        phase="plan",
        conversation_length=2,
        conversation_seqs=(0, 1),
        pending_questions=[],
        spawned_task_ids=(T1, T2),
        waiting_on_task_ids=(T2,),
        last_checkpoint=None,
        last_save_point="llm_response",
        save_seq=3,
        dead=False,
    )
    return replace(base, **fields)


def plan(s: StoredState, phase: str = "plan", known: set[UUID] | None = None) -> Any:
    return plan_restoration(
        s, contract_phase=phase, contract_phases=PHASES, known_task_ids={T1, T2} if known is None else known
    )


# --- the mode ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("save_point", "dead", "mode"),
    [
        ("shutdown", False, RestoreMode.CLEAN),  # stopped on purpose, however long ago
        ("shutdown", True, RestoreMode.CRASH),  # beat again after the shutdown save, then died
        ("llm_response", False, RestoreMode.CRASH),  # taken over while it ran, or lost without a word
        ("llm_response", True, RestoreMode.CRASH),
        (None, False, RestoreMode.CRASH),
    ],
)
def test_the_mode_follows_the_last_save_point_and_death(save_point: str | None, dead: bool, mode: RestoreMode) -> None:
    s = stored(last_save_point=save_point, dead=dead)
    assert restore_mode(s) is mode
    assert plan(s).mode is mode


def test_nothing_saved_starts_fresh_with_the_warning() -> None:
    p = plan(stored(save_seq=0, state="working", phase="execute"), phase="execute")
    assert (p.mode, p.state, p.phase, p.conversation_length) == (RestoreMode.FRESH, "initializing", "execute", 0)
    assert (p.warnings, p.truncate_conversation) == ((NO_SAVED_STATE,), False)


def test_a_consistent_state_is_resumed_as_saved() -> None:
    p = plan(stored())
    assert (p.mode, p.state, p.conversation_length, p.spawned_task_ids, p.waiting_on_task_ids) == (
        RestoreMode.CRASH,
        "working",
        2,
        (T1, T2),
        (T2,),
    )
    assert (p.truncate_conversation, p.warnings) == (False, ())


def test_an_inconsistent_state_falls_back_to_a_consistent_checkpoint() -> None:
    checkpoint = {
        "seq": 2,
        "state": "waiting_for_tasks",
        "phase": "plan",
        "conversation_length": 1,
        "spawned_task_ids": [str(T1)],
        "waiting_on_task_ids": [str(T1)],
    }
    broken = stored(conversation_seqs=(0,), last_checkpoint=checkpoint)  # a message lost
    p = plan(broken)
    assert (p.mode, p.state, p.conversation_length, p.spawned_task_ids) == (
        RestoreMode.CHECKPOINT,
        "waiting_for_tasks",
        1,
        (T1,),
    )
    assert p.truncate_conversation is True
    assert any("saved state rejected" in w for w in p.warnings)


@pytest.mark.parametrize("checkpoint", [None, {"state": "working"}, {"conversation_length": "x", "state": "w"}])
def test_without_a_usable_checkpoint_an_inconsistent_state_starts_fresh(checkpoint: dict[str, Any] | None) -> None:
    p = plan(stored(phase="nowhere", last_checkpoint=checkpoint))
    assert (p.mode, p.state, p.conversation_length, p.truncate_conversation) == (
        RestoreMode.FRESH,
        "initializing",
        0,
        True,
    )
    assert p.warnings[-1] == NO_USABLE_CHECKPOINT


def test_the_phase_is_always_the_contracts_with_a_warning_when_it_moved_on() -> None:
    p = plan(stored(phase="plan"), phase="execute")
    assert p.phase == "execute"
    assert p.warnings == ("the contract moved on to phase 'execute' since the save in 'plan'",)


# --- the state resumed in ---------------------------------------------------------------------------------


def test_pending_questions_put_it_back_to_waiting_for_the_owner() -> None:
    r = resume(plan(stored()), questions_pending=True, task_status={T2: "running"})
    assert (r.state, r.open_waits) == ("waiting_for_user", [T2])


def test_open_waits_put_it_back_to_waiting_for_tasks_and_finished_ones_are_told() -> None:
    r = resume(plan(stored()), questions_pending=False, task_status={T1: "completed", T2: "pending"})
    assert (r.state, r.open_waits, r.finished) == ("waiting_for_tasks", [T2], [T1])


@pytest.mark.parametrize(
    ("saved", "resumed"), [("interrupted", "working"), ("initializing", "working"), ("idle", "idle")]
)
def test_an_interrupted_supervisor_resumes_working(saved: str, resumed: str) -> None:
    r = resume(plan(stored(state=saved)), questions_pending=False, task_status={T2: "completed"})
    assert r.state == resumed


def test_a_fresh_start_stays_initializing() -> None:
    r = resume(plan(stored(save_seq=0)), questions_pending=False, task_status={})
    assert r.state == "initializing"


# --- the SDK follows the service's interval ---------------------------------------------------------------


def test_a_loop_without_an_interval_follows_the_service() -> None:
    loop = HeartbeatLoop(lambda: None)
    assert loop.interval == DEFAULT_INTERVAL
    loop.follow(7)
    assert loop.interval == 7
    loop.follow(None)  # an older service says nothing: keep what we know
    assert loop.interval == 7


def test_an_explicit_interval_is_the_longest_wait_the_service_may_shorten_it() -> None:
    loop = HeartbeatLoop(lambda: None, interval=0.5)
    loop.follow(30)
    assert loop.interval == 0.5
    fast = HeartbeatLoop(lambda: None, interval=60)
    fast.follow(30)
    assert fast.interval == 30


def test_the_answer_carries_the_interval() -> None:
    body = {"task_id": "t", "accepted": True, "heartbeat_interval_seconds": 12}
    assert HeartbeatAnswer.of(body).heartbeat_interval == 12
    assert HeartbeatAnswer.of({"task_id": "t", "accepted": True}).heartbeat_interval is None


# --- the SDK's daemon adopts adoptable supervisors ---------------------------------------------------------


class FakeApi:
    def __init__(self, tasks: list[dict[str, Any]], taken: set[str]) -> None:
        self.tasks = tasks
        self.taken = taken
        self.claims: list[tuple[str, str]] = []

    def register_daemon(self, name: str, **_: Any) -> dict[str, Any]:
        return {"id": "d-1", "heartbeat_interval_seconds": 9}

    def reassignable_tasks(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.tasks[:limit]

    def claim_task(self, task_id: str, daemon_id: str) -> dict[str, Any]:
        if task_id in self.taken:
            raise ApiError(409, "CONFLICT", "task is not reassignable")
        self.claims.append((task_id, daemon_id))
        return {"id": task_id}


class Idle:
    def __init__(self, contract_id: str) -> None:
        self.contract_id = contract_id
        self.session = None

    def run(self) -> str:
        return "stopped"

    def crash(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_daemon_adopts_supervisor_tasks_it_wins_and_follows_the_registered_interval() -> None:
    tasks = [
        {"id": "t-worker", "contract_id": "c-0", "is_supervisor": False},
        {"id": "t-lost", "contract_id": "c-1", "is_supervisor": True},
        {"id": "t-won", "contract_id": "c-2", "is_supervisor": True},
        {"id": "t-declined", "contract_id": "c-3", "is_supervisor": True},
    ]
    api = FakeApi(tasks, taken={"t-lost"})
    daemon = Daemon(api, "adopter", adopt=lambda cid: None if cid == "c-3" else Idle(cid))  # type: ignore[arg-type]
    daemon.register()
    assert daemon.heartbeats.interval == 9
    assert daemon.adopt_tasks() == ["c-2"]
    assert api.claims == [("t-won", "d-1")]
    daemon.join(5)
    assert daemon.outcomes == {"c-2": "stopped"}


def test_a_stopping_daemon_adopts_nothing() -> None:
    api = FakeApi([{"id": "t", "contract_id": "c", "is_supervisor": True}], taken=set())
    daemon = Daemon(api, "leaving", adopt=Idle)  # type: ignore[arg-type]
    daemon.register()
    daemon.stop(timeout=1)
    assert daemon.adopt_tasks() == []
    assert api.claims == []
