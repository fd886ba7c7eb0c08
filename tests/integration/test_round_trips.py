"""The round trips of the hot requests on the local stack's pool (issue 15: "fewer, not faster"): a read
sends its SELECTs and nothing else (no BEGIN/COMMIT: ``db/connection.py: reading``), a known token is
not looked up (``services/principal_cache.py``), and a write is its one transaction. The Lambda
container's reads keep their transaction: tests/integration/test_lambda_reconnect.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db.connection import PooledDatabase
from makima.services.principal_cache import PrincipalCache
from tests.conftest import Caller
from tests.integration.round_trips import Counting

pytestmark = pytest.mark.integration


@pytest.fixture
def counted(db: PooledDatabase) -> Iterator[tuple[TestClient, Counting]]:
    counting = Counting(db)
    principals = PrincipalCache()
    principals.resume()  # as the stack's, its listener connected
    with TestClient(create_app(counting, principals=principals)) as client:
        yield client, counting


def _send(client: TestClient, counting: Counting, caller: Caller, method: str, path: str, **kw: Any) -> list[str]:
    client.get("/api/v1/contracts?limit=1", headers=caller.headers)  # the token, known from now on
    counting.calls.clear()
    r = client.request(method, path, headers=caller.headers, **kw)
    assert r.status_code < 300, r.text
    return list(counting.calls)


def test_reads_send_their_selects_and_nothing_else(
    counted: tuple[TestClient, Counting], user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    client, counting = counted
    contract = new_contract(user, name="trips")["id"]
    assert _send(client, counting, user, "GET", "/api/v1/contracts?status=created&limit=50") == ["execute"]
    assert "transaction" not in _send(client, counting, user, "GET", f"/api/v1/contracts/{contract}")
    r = client.post(f"/api/v1/contracts/{contract}/supervisor", json={}, headers=user.headers)
    assert r.status_code == 201, r.text
    # the contract, its supervisor and the page of the conversation in one SELECT (it was two: the page apart)
    assert _send(client, counting, user, "GET", f"/api/v1/contracts/{contract}/supervisor/state") == ["execute"]


def test_a_status_change_is_one_transaction(
    counted: tuple[TestClient, Counting], user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    client, counting = counted
    contract = new_contract(user, name="trips-status")
    url = f"/api/v1/contracts/{contract['id']}/status"
    r = client.post(url, json={"status": "active", "expected_version": contract["version"]}, headers=user.headers)
    assert r.status_code == 200, r.text
    calls = _send(
        client, counting, user, "POST", url, json={"status": "paused", "expected_version": r.json()["version"]}
    )
    # the contract locked, then its status set with the event that records it in the same statement
    # (db/events.py: with_event; it was three: the event written apart)
    assert calls == ["transaction"] + ["execute"] * 2
    events = client.get(f"/api/v1/contracts/{contract['id']}/events", headers=user.headers).json()
    changed = [e["payload"] for e in events["events"] if e["type"] == "status_changed"]
    assert [(e["old_status"], e["new_status"]) for e in changed] == [("created", "active"), ("active", "paused")]
    paused = client.get(f"/api/v1/contracts/{contract['id']}", headers=user.headers).json()
    assert (paused["status"], paused["version"]) == ("paused", r.json()["version"] + 1)


def test_a_resume_reads_its_phase_gate_in_one_statement(
    counted: tuple[TestClient, Counting], user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    """A contract that becomes active evaluates its gate (deliverables done, tasks, pending questions):
    one statement (db/completion.py), where it was three."""
    client, counting = counted
    contract = new_contract(user, name="trips-resume")
    url = f"/api/v1/contracts/{contract['id']}/status"
    r = client.post(url, json={"status": "active", "expected_version": contract["version"]}, headers=user.headers)
    assert r.status_code == 200, r.text
    r = client.post(url, json={"status": "paused", "expected_version": r.json()["version"]}, headers=user.headers)
    assert r.status_code == 200, r.text
    body = {"status": "active", "expected_version": r.json()["version"]}
    calls = _send(client, counting, user, "POST", url, json=body)
    # the contract locked with its type, its status set with its event, the gate's work: three, in one
    # transaction (it was five: the event and the type read apart)
    assert calls == ["transaction"] + ["execute"] * 3


def test_a_plain_state_save_is_one_statement(
    counted: tuple[TestClient, Counting], user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    """A save that appends a message at the end and leaves the state as it was (the common one, issue
    15): one statement that checks and writes (db/supervisors.py: save_if_plain), outside any
    transaction. It was five statements (the contract and the supervisor read apart, the activity
    written apart), then three (the append apart), then a transaction of two. A save that changes the
    state is not plain: the statement writes nothing, and the transaction does the save."""
    client, counting = counted
    contract = new_contract(user, name="trips-save")["id"]
    r = client.post(f"/api/v1/contracts/{contract}/supervisor", json={}, headers=user.headers)
    assert r.status_code == 201, r.text
    url = f"/api/v1/contracts/{contract}/supervisor/state"

    def save(seq: int, state: str = "working") -> dict[str, Any]:
        return {
            "generation": 1, "seq": seq, "save_point": "llm_response", "state": state, "phase": "plan",
            "conversation_offset": seq - 1, "conversation_append": [{"role": "assistant", "content": f"m{seq}"}],
        }  # fmt: skip

    # the state changes: the plain statement, then the transaction (the locked read; the first save counts
    # the stored conversation: the append, the sizes and the update; the event)
    assert _send(client, counting, user, "PUT", url, json=save(1)) == ["execute", "transaction"] + ["execute"] * 5
    with counting.db.connection() as conn:  # activity older than its resolution: the save refreshes it
        conn.execute("UPDATE contracts SET last_activity_at = now() - interval '1 minute' WHERE id = %s", (contract,))
    before = client.get(f"/api/v1/contracts/{contract}", headers=user.headers).json()["last_activity_at"]
    assert _send(client, counting, user, "PUT", url, json=save(2)) == ["execute"]
    state = client.get(url, headers=user.headers).json()
    assert (state["save_seq"], state["conversation_length"]) == (2, 2)
    assert [m["content"] for m in state["conversation_history"]] == ["m1", "m2"]
    assert client.get(f"/api/v1/contracts/{contract}", headers=user.headers).json()["last_activity_at"] > before
    events = client.get(f"/api/v1/contracts/{contract}/events", headers=user.headers).json()["events"]
    assert [e["payload"]["new_state"] for e in events if e["type"] == "supervisor_state_changed"] == ["working"]


def test_a_plain_heartbeat_is_one_small_statement(
    counted: tuple[TestClient, Counting], user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    """A heartbeat of a live supervisor in the state it is in, nothing waiting for it: one statement, the
    plain one (db/heartbeats.py: _PLAIN_ONE, a plan of a few nodes); a heartbeat with a new state: the
    plain one writes nothing, then the full one (its event)."""
    client, counting = counted
    contract = new_contract(user, name="trips-heartbeat")["id"]
    r = client.post(f"/api/v1/contracts/{contract}/supervisor", json={}, headers=user.headers)
    assert r.status_code == 201, r.text
    task = r.json()["supervisor"]["task_id"]
    url = f"/api/v1/contracts/{contract}/supervisor/heartbeat"

    def beat(state: str) -> dict[str, Any]:
        return {"task_id": task, "state": state, "phase": "plan", "current_activity": "x", "progress": 1,
                "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip

    assert _send(client, counting, user, "POST", url, json=beat("working")) == ["execute"] * 2  # a new state
    assert _send(client, counting, user, "POST", url, json=beat("working")) == ["execute"]
    status = client.get(f"/api/v1/contracts/{contract}/supervisor/status", headers=user.headers).json()
    assert (status["state"], status["heartbeat_count"]) == ("working", 2)


def test_a_plain_batch_is_one_statement(
    counted: tuple[TestClient, Counting], user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    """A batch whose every heartbeat is plain: one statement (db/heartbeats.py: _PLAIN_MANY); a batch
    with a new state in it: the plain statement, which writes nothing, then the full one."""
    client, counting = counted
    tasks = []
    for k in range(3):
        contract = new_contract(user, name=f"trips-batch-{k}")["id"]
        r = client.post(f"/api/v1/contracts/{contract}/supervisor", json={}, headers=user.headers)
        assert r.status_code == 201, r.text
        tasks.append((contract, r.json()["supervisor"]["task_id"]))

    def batch(*states: str) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat()
        return {"heartbeats": [
            {"task_id": t, "contract_id": c, "state": s, "phase": "plan", "current_activity": "x", "progress": 1,
             "timestamp": now}
            for (c, t), s in zip(tasks, states, strict=True)
        ]}  # fmt: skip

    url = "/api/v1/supervisors/heartbeats"
    assert _send(client, counting, user, "POST", url, json=batch(*["working"] * 3)) == ["execute"] * 2
    assert _send(client, counting, user, "POST", url, json=batch(*["working"] * 3)) == ["execute"]
    waiting = batch("working", "waiting_for_user", "working")
    assert _send(client, counting, user, "POST", url, json=waiting) == ["execute"] * 2
    r = client.post(url, json=batch(*["working"] * 3), headers=user.headers)
    assert r.status_code == 200, r.text
    assert [a["accepted"] for a in r.json()["results"]] == [True] * 3
    status = client.get(f"/api/v1/contracts/{tasks[1][0]}/supervisor/status", headers=user.headers).json()
    assert (status["state"], status["heartbeat_count"]) == ("working", 4)
