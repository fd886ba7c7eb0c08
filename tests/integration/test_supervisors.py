"""Seed Phase 3 over the API against the real database: states, heartbeats, retention, timeouts,
persisted state, restoration, reassignment, worktrees, status and sync."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import FeatureFlagsConfig, Settings
from makima.db import heartbeats as heartbeats_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.supervisors import SupervisorState
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"


def now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Sup:
    client: TestClient
    caller: Caller
    contract_id: str
    task_id: str
    daemon_id: str

    def url(self, suffix: str = "") -> str:
        return f"{API}/contracts/{self.contract_id}{suffix}"

    def beat(self, **fields: Any) -> Any:
        body = {"task_id": self.task_id, "state": "working", "phase": "plan", "timestamp": now(), **fields}
        return self.client.post(self.url("/supervisor/heartbeat"), json=body, headers=self.caller.headers)

    def status(self) -> dict[str, Any]:
        r = self.client.get(self.url("/supervisor/status"), headers=self.caller.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def save(self, expect: int = 200, **fields: Any) -> Any:
        body = {"generation": 1, "state": "working", "phase": "plan", "save_point": "llm_response", **fields}
        r = self.client.put(self.url("/supervisor/state"), json=body, headers=self.caller.headers)
        assert r.status_code == expect, r.text
        return r.json()

    def restore(self, daemon_id: str | None = None) -> dict[str, Any]:
        r = self.client.post(
            self.url("/supervisor/restore"),
            json={"daemon_id": daemon_id or self.daemon_id},
            headers=self.caller.headers,
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def events(self) -> list[dict[str, Any]]:
        r = self.client.get(self.url("/events"), params={"limit": 1000}, headers=self.caller.headers)
        return list(r.json()["events"])


def start(client: TestClient, caller: Caller, contract_type: str = "simple", name: str = "host-a") -> Sup:
    h = caller.headers
    daemon = client.post(f"{API}/daemons", json={"name": name, "hostname": name, "capacity": 4}, headers=h).json()
    c = client.post(
        f"{API}/contracts",
        json={"name": "sup", "contract_type": contract_type, "auto_complete_enabled": False},
        headers=h,
    ).json()
    r = client.post(f"{API}/contracts/{c['id']}/supervisor", json={"daemon_id": daemon["id"]}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["contract"]["status"] == "active"
    return Sup(client, caller, c["id"], r.json()["supervisor"]["task_id"], daemon["id"])


@pytest.fixture
def sup(client: TestClient, user: Caller) -> Sup:
    return start(client, user)


def _age(database_url: str, task_id: str, minutes: int) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE supervisor_states SET last_heartbeat_at = now() - make_interval(mins => %s) WHERE task_id = %s",
            (minutes, task_id),
        )


# --- 3.1 / 3.2 ------------------------------------------------------------------------------------------


def test_all_nine_states_are_recognised_and_unknown_ones_refused(sup: Sup) -> None:
    for state in SupervisorState:
        assert sup.beat(state=state.value).json()["accepted"] is True
    r = sup.beat(state="daydreaming")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST")
    assert len(SupervisorState) == 9


def test_a_heartbeat_updates_status_history_and_activity(sup: Sup, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - interval '1 hour' WHERE id = %s", (sup.contract_id,)
        )
    r = sup.beat(state="working", current_activity="Implementing auth", progress=45, pending_task_ids=[sup.task_id])
    assert r.json() == {
        "task_id": sup.task_id,
        "accepted": True,
        "error": None,
        "code": None,
        "errors": None,
        "sync_requested": False,
        "restart_requested": False,
        "superseded": False,
        "heartbeat_interval_seconds": 30,
    }
    s = sup.status()
    assert (s["state"], s["current_activity"], s["progress"], s["alive"]) == ("working", "Implementing auth", 45, True)
    assert s["pending_task_ids"] == [sup.task_id]
    history = sup.client.get(sup.url("/supervisor/heartbeats"), params={"limit": 5}, headers=sup.caller.headers).json()
    assert [(h["state"], h["activity"], h["progress"]) for h in history["heartbeats"]] == [
        ("working", "Implementing auth", 45)
    ]
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT now() - last_activity_at < interval '1 minute' FROM contracts WHERE id = %s", (sup.contract_id,)
        ).fetchone()
    assert row == (True,)
    types = [e["type"] for e in sup.events()]
    assert "supervisor_state_changed" in types


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        # Offsets from the time the test runs, not from collection: a long session would make
        # "10 minutes ahead" the past by the time the test is reached.
        ({"timestamp": timedelta(minutes=10)}, "future"),
        ({"timestamp": -timedelta(hours=3)}, "too old"),
        ({"timestamp": "2026-11-24T10:00:00"}, "timezone"),
        ({"progress": 101}, "less than or equal to 100"),
        ({"progress": -1}, "greater than or equal to 0"),
        ({"current_activity": "x" * 2001}, "at most 2000"),
    ],
)
def test_bad_heartbeats_are_refused_and_write_nothing(sup: Sup, fields: dict[str, Any], fragment: str) -> None:
    before = sup.status()["heartbeat_count"]
    if isinstance(fields.get("timestamp"), timedelta):
        fields = {**fields, "timestamp": (datetime.now(UTC) + fields["timestamp"]).isoformat()}
    r = sup.beat(**fields)
    assert r.status_code == 422, r.text
    assert fragment in r.text
    assert sup.status()["heartbeat_count"] == before


def test_batched_heartbeats_answer_each_on_its_own(client: TestClient, user: Caller) -> None:
    a, b = start(client, user, name="batch-a"), start(client, user, name="batch-b")
    hb = {"state": "working", "phase": "plan", "timestamp": now()}
    body = {
        "daemon_id": a.daemon_id,
        "heartbeats": [
            {**hb, "task_id": a.task_id, "contract_id": a.contract_id, "progress": 10},
            {**hb, "task_id": b.task_id, "contract_id": b.contract_id, "progress": 20},
            {**hb, "task_id": a.task_id, "contract_id": b.contract_id},  # wrong contract
            {
                **hb,
                "task_id": b.task_id,
                "contract_id": b.contract_id,
                "timestamp": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
        ],
    }
    r = client.post(f"{API}/supervisors/heartbeats", json=body, headers=user.headers).json()
    assert (r["accepted"], r["rejected"]) == (2, 2)
    assert [x["accepted"] for x in r["results"]] == [True, True, False, False]
    assert "future" in r["results"][3]["error"]
    assert (a.status()["progress"], b.status()["progress"]) == (10, 20)


def test_heartbeat_history_is_partitioned_and_expired_partitions_are_dropped(db: PooledDatabase, sup: Sup) -> None:
    sup.beat()
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    with transaction(db) as conn:
        old = heartbeats_sql.ensure_partitions(conn, now=three_days_ago, hours_ahead=0, hours_behind=0)
        assert old == [heartbeats_sql.partition_name(three_days_ago)]
        conn.execute(
            "INSERT INTO supervisor_heartbeats (task_id, contract_id, state, phase, sent_at, received_at) "
            "VALUES (%s, %s, 'working', 'plan', %s, %s)",
            (sup.task_id, sup.contract_id, three_days_ago, three_days_ago),
        )
        assert heartbeats_sql.partition_name(datetime.now(UTC)) in heartbeats_sql.partitions(conn)
    result = supervisors_svc.maintain_heartbeat_partitions(db)
    assert old[0] in result["dropped"]
    with transaction(db) as conn:
        assert old[0] not in heartbeats_sql.partitions(conn)
        rows = conn.execute(
            "SELECT count(*) AS n FROM supervisor_heartbeats WHERE task_id = %s", (sup.task_id,)
        ).fetchone()
    assert rows is not None
    assert rows["n"] == 1  # the recent one stays


# --- timeouts -------------------------------------------------------------------------------------------


def test_silent_supervisors_are_marked_dead_and_a_late_heartbeat_recovers_them(
    db: PooledDatabase, client: TestClient, user: Caller, database_url: str
) -> None:
    silent, fresh, finished = (start(client, user, name=f"to-{i}") for i in range(3))
    for s in (silent, fresh, finished):
        s.beat()
    _age(database_url, silent.task_id, 10)
    _age(database_url, finished.task_id, 10)
    client.post(finished.url("/status"), json={"status": "completed"}, headers=user.headers)
    dead = supervisors_svc.detect_dead_supervisors(db, timedelta(seconds=120))
    dead_ids = {str(d["task_id"]) for d in dead}
    assert silent.task_id in dead_ids
    assert fresh.task_id not in dead_ids
    assert finished.task_id not in dead_ids  # finished contracts are never touched
    st = silent.status()
    assert (st["alive"], st["state"]) == (False, "interrupted")
    change = [e for e in silent.events() if e["type"] == "supervisor_state_changed"][-1]
    assert (change["payload"]["new_state"], change["actor"]) == ("interrupted", "system")
    r = client.post(silent.url("/supervisor/sync"), json={}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "SUPERVISOR_DEAD")
    # a late heartbeat from the live supervisor is a recovery, not a conflict
    assert silent.beat(state="working").json()["accepted"] is True
    assert silent.status()["alive"] is True
    assert [e for e in silent.events() if e["type"] == "supervisor_state_changed"][-1]["payload"]["recovered"] is True
    # a second sweep does not mark it again
    assert silent.task_id not in {
        str(d["task_id"]) for d in supervisors_svc.detect_dead_supervisors(db, timedelta(seconds=120))
    }


def test_no_supervisor_is_404(client: TestClient, user: Caller) -> None:
    cid = client.post(f"{API}/contracts", json={"name": "alone"}, headers=user.headers).json()["id"]
    r = client.get(f"{API}/contracts/{cid}/supervisor/status", headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "SUPERVISOR_NOT_FOUND")


# --- 3.3 state persistence --------------------------------------------------------------------------------


def test_state_is_persisted_at_each_save_point_and_read_back_whole(sup: Sup) -> None:
    h = sup.caller.headers
    t1 = sup.client.post(sup.url("/tasks"), json={"name": "research"}, headers=h).json()["id"]
    msgs = [{"role": "assistant", "content": f"m{i}"} for i in range(3)]
    sup.save(seq=1, save_point="llm_response", conversation_append=msgs[:2])
    sup.save(
        seq=2,
        save_point="task_spawn",
        spawned_task_ids=[t1],
        waiting_on_task_ids=[t1],
        state="waiting_for_tasks",
        conversation_offset=2,
        conversation_append=msgs[2:],
    )
    sup.save(
        seq=3,
        save_point="question_asked",
        pending_questions=[{"question": "which db?"}],
        state="waiting_for_user",
        conversation_offset=3,
        spawned_task_ids=[t1],
        waiting_on_task_ids=[t1],
    )
    sup.save(
        seq=4,
        save_point="heartbeat",
        current_activity="waiting",
        state="waiting_for_user",
        conversation_offset=3,
        spawned_task_ids=[t1],
        waiting_on_task_ids=[t1],
        pending_questions=[{"question": "which db?"}],
    )
    state = sup.client.get(sup.url("/supervisor/state"), headers=h).json()
    assert state["conversation_history"] == msgs
    assert (state["save_seq"], state["state"], state["last_save_point"]) == (4, "waiting_for_user", "heartbeat")
    assert state["pending_questions"] == [{"question": "which db?"}]
    assert (state["spawned_task_ids"], state["waiting_on_task_ids"]) == ([t1], [t1])
    assert state["last_checkpoint"]["seq"] == 2  # task_spawn is a checkpoint; the others are not
    # a retried save (same offset) appends nothing twice; a stale sequence is refused
    r = sup.save(expect=409, seq=4, conversation_offset=2, conversation_append=msgs[2:])
    assert r["error"]["details"]["reason"] == "stale_sequence"
    sup.save(seq=5, conversation_offset=2, conversation_append=msgs[2:])
    assert len(sup.client.get(sup.url("/supervisor/state"), headers=h).json()["conversation_history"]) == 3
    gap = sup.save(expect=400, seq=6, conversation_offset=10, conversation_append=msgs)
    assert gap["error"]["code"] == "BAD_REQUEST"


def test_a_zombie_cannot_overwrite_its_successor(sup: Sup) -> None:
    sup.save(seq=1)
    restored = sup.restore()
    assert restored["generation"] == 2
    zombie = sup.save(expect=409, generation=1, seq=99)
    assert zombie["error"]["details"]["reason"] == "superseded"
    assert sup.beat(generation=1).json()["superseded"] is True
    sup.save(generation=2, seq=restored["next_seq"])


# --- 3.4 restoration --------------------------------------------------------------------------------------


def test_restore_with_no_state_starts_fresh(sup: Sup) -> None:
    r = sup.restore()
    assert (r["mode"], r["state"], r["conversation_history"]) == ("fresh", "initializing", [])
    assert "starting fresh" in r["restoration_context"].lower() or "fresh" in r["restoration_context"]
    assert r["warnings"] == ["no saved state: starting fresh"]


def test_restore_after_clean_shutdown(sup: Sup) -> None:
    sup.save(seq=1, conversation_append=[{"role": "assistant", "content": "plan drafted"}])
    sup.save(seq=2, save_point="shutdown", state="idle", conversation_offset=1)
    r = sup.restore()
    assert (r["mode"], r["state"], r["next_seq"]) == ("clean", "idle", 3)
    assert r["conversation_history"] == [{"role": "assistant", "content": "plan drafted"}]
    assert "shut down cleanly" in r["restoration_context"]


def test_restore_after_a_crash(client: TestClient, user: Caller, db: PooledDatabase, database_url: str) -> None:
    sup = start(client, user, name="crashy")
    sup.save(seq=1, conversation_append=[{"role": "assistant", "content": "working"}])
    sup.beat()
    _age(database_url, sup.task_id, 10)
    supervisors_svc.detect_dead_supervisors(db, timedelta(seconds=120))
    second = client.post(f"{API}/daemons", json={"name": "rescuer"}, headers=user.headers).json()
    r = sup.restore(daemon_id=second["id"])
    assert (r["mode"], r["state"]) == ("crash", "working")
    assert "stopped unexpectedly" in r["restoration_context"]
    s = sup.status()
    assert (s["alive"], s["daemon_id"], s["generation"]) == (True, second["id"], 2)
    assert "supervisor_restored" in [e["type"] for e in sup.events()]


def test_restore_of_corrupted_state_falls_back_to_the_checkpoint(sup: Sup, database_url: str) -> None:
    t1 = sup.client.post(sup.url("/tasks"), json={"name": "t1"}, headers=sup.caller.headers).json()["id"]
    msgs = [{"role": "assistant", "content": f"m{i}"} for i in range(4)]
    sup.save(seq=1, save_point="task_spawn", spawned_task_ids=[t1], conversation_append=msgs[:2])  # checkpoint: 2 msgs
    sup.save(seq=2, conversation_offset=2, conversation_append=msgs[2:], spawned_task_ids=[t1])
    # corrupt it: a message lost from the middle, and a task id that does not exist
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM supervisor_conversation WHERE task_id = %s AND seq = 2", (sup.task_id,))
        conn.execute(
            "UPDATE supervisor_states SET waiting_on_task_ids = ARRAY[gen_random_uuid()] WHERE task_id = %s",
            (sup.task_id,),
        )
    r = sup.restore()
    assert r["mode"] == "checkpoint"
    assert r["conversation_history"] == msgs[:2]
    assert r["spawned_task_ids"] == [t1]
    assert any("saved state rejected" in w for w in r["warnings"])
    assert "last checkpoint" in r["restoration_context"]


def test_restore_of_corrupted_state_without_checkpoint_starts_fresh(sup: Sup, database_url: str) -> None:
    sup.save(seq=1, conversation_append=[{"role": "assistant", "content": "x"}])
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE supervisor_states SET phase = 'no-such-phase' WHERE task_id = %s", (sup.task_id,))
    r = sup.restore()
    assert (r["mode"], r["conversation_history"]) == ("fresh", [])


def test_restore_redelivers_pending_questions_and_undelivered_answers(sup: Sup) -> None:
    h = sup.caller.headers
    q1 = sup.client.post(sup.url("/questions"), json={"question": "Which database?"}, headers=h).json()
    q2 = sup.client.post(sup.url("/questions"), json={"question": "Deadline?"}, headers=h).json()
    sup.client.post(sup.url(f"/questions/{q2['id']}/answer"), json={"answer": "Friday"}, headers=h)
    sup.save(
        seq=1,
        state="waiting_for_user",
        save_point="question_asked",
        pending_questions=[{"id": q1["id"]}, {"id": q2["id"]}],
    )
    r = sup.restore()
    assert r["state"] == "waiting_for_user"
    assert [q["question"] for q in r["pending_questions"]] == ["Which database?"]
    assert [(q["question"], q["answer"]) for q in r["answered_questions"]] == [("Deadline?", "Friday")]
    assert "Still waiting for the owner's answer to: Which database?" in r["restoration_context"]
    assert "The owner answered 'Deadline?': Friday" in r["restoration_context"]


def test_restore_resumes_waiting_on_open_tasks(sup: Sup) -> None:
    h = sup.caller.headers
    done = sup.client.post(sup.url("/tasks"), json={"name": "lint"}, headers=h).json()["id"]
    running = sup.client.post(sup.url("/tasks"), json={"name": "tests"}, headers=h).json()["id"]
    sup.save(
        seq=1,
        save_point="task_spawn",
        state="waiting_for_tasks",
        spawned_task_ids=[done, running],
        waiting_on_task_ids=[done, running],
    )
    sup.client.post(sup.url(f"/tasks/{done}/status"), json={"status": "completed"}, headers=h)
    r = sup.restore()
    assert (r["state"], r["waiting_on_task_ids"], r["finished_task_ids"]) == ("waiting_for_tasks", [running], [done])
    assert "waiting on 1 task(s): tests" in r["restoration_context"]
    assert "Finished while you were away: lint (completed)" in r["restoration_context"]


# --- reassignment and worktrees -----------------------------------------------------------------------


def test_tasks_of_a_dead_daemon_are_claimed_by_exactly_one(
    db: PooledDatabase, client: TestClient, user: Caller, database_url: str
) -> None:
    sup = start(client, user, name="doomed")
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE daemons SET last_heartbeat_at = now() - interval '1 hour' WHERE id = %s", (sup.daemon_id,))
    supervisors_svc.detect_dead_supervisors(db, timedelta(seconds=120))
    listed = client.get(f"{API}/tasks/reassignable", headers=user.headers).json()["tasks"]
    assert sup.task_id in [t["id"] for t in listed]
    claimants = [
        client.post(f"{API}/daemons", json={"name": f"claimant-{i}"}, headers=user.headers).json()["id"]
        for i in range(6)
    ]
    barrier = threading.Barrier(len(claimants))
    codes: list[int] = []
    lock = threading.Lock()

    def claim(daemon_id: str) -> None:
        barrier.wait()
        r = client.post(f"{API}/tasks/{sup.task_id}/claim", json={"daemon_id": daemon_id}, headers=user.headers)
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=claim, args=(d,)) for d in claimants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(codes) == {200: 1, 409: len(claimants) - 1}
    assert sup.task_id not in [
        t["id"] for t in client.get(f"{API}/tasks/reassignable", headers=user.headers).json()["tasks"]
    ]


def test_orphaned_worktrees_are_asked_back_and_confirmed(client: TestClient, user: Caller) -> None:
    sup = start(client, user, name="tree-host")
    h = user.headers
    t1 = client.post(sup.url("/tasks"), json={"name": "feature"}, headers=h).json()["id"]
    t2 = client.post(sup.url("/tasks"), json={"name": "docs"}, headers=h).json()["id"]
    report = {
        "worktrees": [
            {"path": "/wt/feature", "branch": "feat", "task_id": t1},
            {"path": "/wt/docs", "branch": "docs", "task_id": t2},
        ]
    }
    hb = client.post(f"{API}/daemons/{sup.daemon_id}/heartbeat", json=report, headers=h).json()
    assert hb["remove_worktrees"] == []
    client.post(sup.url(f"/tasks/{t1}/status"), json={"status": "completed"}, headers=h)
    hb = client.post(f"{API}/daemons/{sup.daemon_id}/heartbeat", json={}, headers=h).json()
    assert [w["path"] for w in hb["remove_worktrees"]] == ["/wt/feature"]
    r = client.post(f"{API}/daemons/{sup.daemon_id}/worktrees/removed", json={"paths": ["/wt/feature"]}, headers=h)
    assert r.json() == {"confirmed": 1}
    states = {
        w["path"]: w["state"]
        for w in client.get(f"{API}/daemons/{sup.daemon_id}/worktrees", headers=h).json()["worktrees"]
    }
    assert states == {"/wt/feature": "removed", "/wt/docs": "active"}
    # when the contract completes, its remaining worktrees are recorded for cleanup
    client.put(sup.url("/auto-complete"), json={"enabled": True}, headers=h)
    client.post(
        sup.url("/phase"),
        json={
            "phase": "execute",
            "expected_version": client.get(sup.url(), headers=h).json()["version"],
            "force": True,  # the plan phase's gate is not met: the owner moves on anyway
        },
        headers=h,
    )
    client.post(sup.url(f"/tasks/{t2}/status"), json={"status": "completed"}, headers=h)
    for d in ("implementation", "pull-request"):
        client.post(sup.url("/deliverables"), json={"deliverable_id": d}, headers=h)
    assert client.get(sup.url(), headers=h).json()["status"] == "completed"
    cleanup = next(e for e in sup.events() if e["type"] == "cleanup_completed")
    assert cleanup["payload"]["worktrees"] == [{"daemon_id": sup.daemon_id, "path": "/wt/docs"}]
    hb = client.post(f"{API}/daemons/{sup.daemon_id}/heartbeat", json={}, headers=h).json()
    assert [w["path"] for w in hb["remove_worktrees"]] == ["/wt/docs"]
    assert sup.status()["state"] == "completed"


# --- 3.5 status and sync ----------------------------------------------------------------------------------


def test_sync_is_delivered_by_the_next_heartbeat(sup: Sup) -> None:
    answer = sup.client.post(sup.url("/supervisor/sync"), json={"wait_seconds": 0}, headers=sup.caller.headers)
    r = answer.json()
    assert (answer.status_code, r["synced"], r["sync_requested"]) == (202, False, True)
    assert sup.status()["sync_requested"] is True
    assert sup.beat().json()["sync_requested"] is True
    assert sup.status()["sync_requested"] is False
    # with wait_seconds the call waits for a heartbeat to collect the request
    stop = threading.Event()

    def beating() -> None:
        while not stop.is_set():
            sup.beat(state="blocked", current_activity="synced")
            time.sleep(0.1)

    t = threading.Thread(target=beating)
    t.start()
    try:
        r = sup.client.post(sup.url("/supervisor/sync"), json={"wait_seconds": 5}, headers=sup.caller.headers).json()
    finally:
        stop.set()
        t.join()
    assert (r["synced"], r["state"]) == (True, "blocked")


def test_restart_request_reaches_the_supervisor(sup: Sup) -> None:
    r = sup.client.post(sup.url("/supervisor/restart"), json={"reason": "stuck"}, headers=sup.caller.headers)
    assert r.json()["restart_requested"] is True
    assert sup.beat().json()["restart_requested"] is True
    assert "supervisor_restart_requested" in [e["type"] for e in sup.events()]


def test_heartbeat_flag_off_disables_heartbeats_cleanly(db: PooledDatabase, user: Caller, client: TestClient) -> None:
    sup = start(client, user, name="flagged")
    settings = Settings(feature_flags=FeatureFlagsConfig(supervisor_heartbeat=False))
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as off:
        body = {"task_id": sup.task_id, "state": "working", "phase": "plan", "timestamp": now()}
        for method, url, payload in (
            ("POST", sup.url("/supervisor/heartbeat"), body),
            ("POST", f"{API}/supervisors/heartbeats", {"heartbeats": [{**body, "contract_id": sup.contract_id}]}),
            ("GET", sup.url("/supervisor/heartbeats"), None),
            ("POST", sup.url("/supervisor/sync"), {}),
        ):
            r = off.request(method, url, json=payload, headers=user.headers)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "FEATURE_DISABLED"), url
        assert off.get(sup.url("/supervisor/status"), headers=user.headers).json()["heartbeat_count"] == 0
