"""Seed Phase 3's must-show: a supervisor process is killed (SIGKILL) in the middle of a phase, another
daemon restores it, and the contract finishes with nothing lost and nothing done twice; a question asked
before the kill is answered while no supervisor runs, and the answer reaches the restored one.

The supervisors are real OS processes (``python -m makima.client.reference``: a daemon hosting the
scripted reference supervisor) talking HTTP to the local stack (``makima dev``)."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from makima.domain.contract_types import builtin_types
from tests.e2e.conftest import Stack
from tests.e2e.processes import EventLinesProcess

pytestmark = pytest.mark.e2e
SPEC = next(t for t in builtin_types() if t.name == "specification")
TASKS_PER_PHASE = 2
EXPECTED_TASKS = {f"{p.id}-step-{i}" for p in SPEC.phases for i in range(1, TASKS_PER_PHASE + 1)}
QUESTION = "Postgres or SQLite for the prototype?"


@dataclass
class Owner:
    """A user of the stack with a person's token (answers questions) and a daemon token."""

    http: httpx.Client
    daemon_token: str

    def contract(self, cid: str) -> dict[str, Any]:
        return self.ok(self.http.get(f"/contracts/{cid}"))

    @staticmethod
    def ok(r: httpx.Response) -> dict[str, Any]:
        assert r.status_code < 300, r.text
        return dict(r.json())


@pytest.fixture
def owner(stack: Stack) -> Iterator[Owner]:
    with stack.client() as admin:
        user = Owner.ok(admin.post("/users", json={"name": f"restore-{uuid.uuid4().hex[:8]}"}))
        person = Owner.ok(admin.post(f"/users/{user['id']}/tokens", json={"kind": "user"}))["token"]
        daemon = Owner.ok(admin.post(f"/users/{user['id']}/tokens", json={"kind": "daemon"}))["token"]
    with stack.client(person) as http:
        yield Owner(http, daemon)


class SupervisorProcess(EventLinesProcess):
    """``python -m makima.client.reference`` with its JSON event lines collected as they come."""

    @classmethod
    def start(cls, stack: Stack, token: str, contract_id: str, *args: str) -> SupervisorProcess:
        cmd = [
            sys.executable,
            "-m",
            "makima.client.reference",
            "--api-url",
            stack.base_url,
            "--contract-id",
            contract_id,
            "--heartbeat-interval",
            "0.3",
            "--tasks-per-phase",
            str(TASKS_PER_PHASE),
            *args,
        ]
        return cls.launch(cmd, {**os.environ, "MAKIMA_TOKEN": token}, who="the supervisor")

    def kinds(self) -> list[str]:
        return [str(e["event"]) for e in self.events]

    def first(self, kind: str) -> dict[str, Any]:
        return next(e for e in self.events if e["event"] == kind)


def eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def assert_finished_whole(owner: Owner, cid: str) -> list[dict[str, Any]]:
    """Completed; every deliverable of every phase recorded; each task exactly once, all completed."""
    c = owner.contract(cid)
    assert (c["status"], c["phase"]) == ("completed", "review")
    phases = owner.ok(owner.http.get(f"/contracts/{cid}/deliverables"))["phases"]
    assert [p["id"] for p in phases] == [p.id for p in SPEC.phases]
    missing = [f"{p['id']}/{d['id']}" for p in phases for d in p["deliverables"] if not d["completed"]]
    assert missing == []
    tasks = owner.ok(owner.http.get(f"/contracts/{cid}/tasks"))["tasks"]
    work = [t for t in tasks if not t["is_supervisor"]]
    names = Counter(t["name"] for t in work)
    assert {n: k for n, k in names.items() if k > 1} == {}, "a task was spawned twice"
    assert set(names) == EXPECTED_TASKS, "a task was lost (or an unexpected one spawned)"
    assert {t["status"] for t in work} == {"completed"}
    assert [t["phase"] for t in work if t["phase"] != t["name"].rsplit("-step-", 1)[0]] == []
    assert sum(t["is_supervisor"] for t in tasks) == 1
    return list(tasks)


def test_a_killed_supervisor_is_restored_by_another_daemon_and_the_contract_finishes(
    stack: Stack, owner: Owner
) -> None:
    cid = owner.ok(owner.http.post("/contracts", json={"name": "must-show", "contract_type": "specification"}))["id"]
    common = ["--step-delay", "0.05", "--ask-in-phase", "specify", "--question", QUESTION]

    # Given a supervisor process on daemon host-a, in the middle of phase "specify": its tasks spawned
    # and running, one of the two deliverables marked, and a question to the owner pending
    first = SupervisorProcess.start(stack, owner.daemon_token, cid, "--daemon-name", "host-a", *common)
    try:
        eventually(lambda: "question_asked" in first.kinds(), what="the question")
        before = owner.contract(cid)
        assert (before["phase"], before["status"]) == ("specify", "waiting_for_input")
        assert [d["completed"] for d in before["deliverables"]] == [True, False]
        open_tasks = {
            t["name"]: t["status"]
            for t in owner.ok(owner.http.get(f"/contracts/{cid}/tasks"))["tasks"]
            if t["phase"] == "specify" and not t["is_supervisor"]
        }
        assert open_tasks == {"specify-step-1": "running", "specify-step-2": "running"}
        saved = owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/state"))
        assert (saved["generation"], saved["last_save_point"], saved["state"]) == (
            1,
            "question_asked",
            "waiting_for_user",
        )
        assert len(saved["waiting_on_task_ids"]) == TASKS_PER_PHASE
        question_id = first.first("question_asked")["question_id"]
        assert [q["id"] for q in saved["pending_questions"]] == [question_id]

        # When it is killed: no shutdown save, no goodbye
        first.kill()
    finally:
        first.stop()
    assert "completed" not in first.kinds()
    host_a = first.first("daemon")["daemon_id"]

    # and the owner answers while no supervisor runs
    answered = owner.ok(
        owner.http.post(f"/contracts/{cid}/questions/{question_id}/answer", json={"answer": "SQLite, for now."})
    )
    assert answered["delivered_at"] is None
    assert owner.contract(cid)["phase"] == "specify"  # nothing moves without a supervisor

    # Then another daemon restores it, and it carries the contract to the end
    second = SupervisorProcess.start(stack, owner.daemon_token, cid, "--daemon-name", "host-b", "--restore", *common)
    try:
        assert second.finish() == 0, second.events[-20:]
    finally:
        second.stop()
    restored = second.first("restored")
    assert (restored["mode"], restored["generation"], restored["answered_questions"]) == ("crash", 2, 1)
    assert restored["spawned"] >= 2 * TASKS_PER_PHASE  # research's and specify's, known from the saved state
    assert restored["waiting_on"] == TASKS_PER_PHASE
    assert "answer_delivered" in second.kinds()
    assert "task_adopted" not in second.kinds()  # the saved state knew every task
    spawned_again = [e["task"] for e in second.events if e["event"] == "task_spawned"]
    assert [t for t in spawned_again if t.startswith(("research", "specify"))] == []

    # nothing lost, nothing done twice
    assert_finished_whole(owner, cid)

    # the answer given while no supervisor ran was delivered to the restored one (after the restore)
    events = owner.ok(owner.http.get(f"/contracts/{cid}/events", params={"limit": 1000}))["events"]
    restores = [e for e in events if e["type"] == "supervisor_restored"]
    assert len(restores) == 1
    assert restores[0]["payload"]["mode"] == "crash"
    host_b = second.first("daemon")["daemon_id"]
    assert restores[0]["payload"]["daemon_id"] == host_b != host_a
    q = next(q for q in owner.ok(owner.http.get(f"/contracts/{cid}/questions"))["questions"] if q["id"] == question_id)
    assert (q["status"], q["answer"]) == ("answered", "SQLite, for now.")
    assert q["delivered_at"] is not None
    assert datetime.fromisoformat(q["delivered_at"]) > datetime.fromisoformat(restores[0]["created_at"])
    # the question was asked once, however often the supervisor looked for it
    assert sum(1 for e in events if e["type"] == "question_asked") == 1

    # the conversation survived the crash whole, with the answer in it, nothing twice
    state = owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/state"))
    assert state["generation"] == 2
    keys = [m.get("key") for m in state["conversation_history"]]
    assert len(keys) == len(set(keys))
    assert keys.index("specify/question") < keys.index("restored/2") < keys.index(f"answer/{question_id}")
    assert "SQLite, for now." in state["conversation_history"][keys.index(f"answer/{question_id}")]["content"]
    status = owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/status"))
    assert (status["daemon_id"], status["generation"], status["state"]) == (host_b, 2, "completed")


def test_kills_at_arbitrary_points_lose_nothing_and_repeat_nothing(stack: Stack, owner: Owner) -> None:
    """Killed again and again right after an action (no delay between actions, so the kill lands
    anywhere, even between creating a task and saving that it did), restored each time."""
    kill_after = (2, 5, 3, 7)  # work events seen by each process before its SIGKILL
    cid = owner.ok(owner.http.post("/contracts", json={"name": "kill often", "contract_type": "specification"}))["id"]
    work = {"task_spawned", "deliverable", "task_completed", "phase"}
    for round_, after in enumerate(kill_after):
        restore = ["--restore"] if round_ else []
        p = SupervisorProcess.start(
            stack, owner.daemon_token, cid, "--daemon-name", f"killed-{round_}", "--step-delay", "0", *restore
        )
        try:
            seen = 0
            while seen < after:
                event = p.next_event()
                assert event["event"] not in ("failed", "completed"), p.events
                seen += event["event"] in work
            p.kill()
        finally:
            p.stop()
    last = SupervisorProcess.start(stack, owner.daemon_token, cid, "--daemon-name", "survivor", "--restore")
    try:
        assert last.finish() == 0, last.events[-20:]
    finally:
        last.stop()
    assert_finished_whole(owner, cid)
    state = owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/state"))
    assert state["generation"] == len(kill_after) + 1  # started once, then restored by each later process
    keys = [m.get("key") for m in state["conversation_history"]]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    "point",
    [
        "plan:spawned-unsaved:plan-step-2",  # the task exists, the state does not know it: adopted by name
        "specify:asked-unsaved",  # the question exists, the state does not know it: not asked twice
        "execute:completed-unsaved:execute-step-1",  # finished, not yet recorded: not finished twice
        "review:delivered-unsaved:review-report",  # marked, not yet said: not marked twice
    ],
)
def test_a_death_between_an_action_and_its_save_repeats_nothing(stack: Stack, owner: Owner, point: str) -> None:
    cid = owner.ok(owner.http.post("/contracts", json={"name": point, "contract_type": "specification"}))["id"]
    common = ["--step-delay", "0", "--ask-in-phase", "specify", "--question", QUESTION]
    stop = threading.Event()

    def answer_questions() -> None:  # the owner, answering whatever is asked
        while not stop.wait(0.1):
            for q in owner.http.get(f"/contracts/{cid}/questions", params={"status": "pending"}).json()["questions"]:
                owner.http.post(f"/contracts/{cid}/questions/{q['id']}/answer", json={"answer": "SQLite."})

    answering = threading.Thread(target=answer_questions, daemon=True)
    answering.start()
    try:
        first = SupervisorProcess.start(
            stack, owner.daemon_token, cid, "--daemon-name", "dies", "--crash-at", point, *common
        )
        assert first.finish() == 137, first.events[-10:]
        assert first.events[-1] == {"event": "killed", "point": point, "t": first.events[-1]["t"]}
        second = SupervisorProcess.start(stack, owner.daemon_token, cid, "--daemon-name", "heir", "--restore", *common)
        assert second.finish() == 0, second.events[-20:]
    finally:
        stop.set()
        answering.join()
    assert_finished_whole(owner, cid)
    if "spawned-unsaved" in point:
        assert [e["task"] for e in second.events if e["event"] == "task_adopted"] == ["plan-step-2"]
    events = owner.ok(owner.http.get(f"/contracts/{cid}/events", params={"limit": 1000}))["events"]
    assert sum(1 for e in events if e["type"] == "question_asked") == 1
    assert sum(1 for e in events if e["type"] == "deliverable_completed") == sum(
        len(p.deliverables) for p in SPEC.phases
    )
    questions = owner.ok(owner.http.get(f"/contracts/{cid}/questions"))["questions"]
    assert [(q["status"], q["delivered_at"] is not None) for q in questions] == [("answered", True)]
