"""Tasks, questions, chat and Task 1.5 activity tracking, over the HTTP API against the real database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"
NewContract = Callable[..., dict[str, Any]]


def _contract(client: TestClient, caller: Caller, cid: str) -> dict[str, Any]:
    r = client.get(f"{API}/contracts/{cid}", headers=caller.headers)
    assert r.status_code == 200
    return dict(r.json())


def _types(client: TestClient, caller: Caller, cid: str) -> list[str]:
    return [e["type"] for e in client.get(f"{API}/contracts/{cid}/events", headers=caller.headers).json()["events"]]


def test_supervisor_task_starts_the_contract_and_only_one_may_live(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract
) -> None:
    owner = make_caller()
    daemon = make_caller(daemon_for=owner)
    c = new_contract(owner)
    url = f"{API}/contracts/{c['id']}/tasks"
    sup = client.post(
        url, json={"name": "supervisor", "is_supervisor": True, "daemon": "host-1"}, headers=daemon.headers
    )
    assert sup.status_code == 201
    assert sup.json()["status"] == "pending"
    assert _contract(client, owner, c["id"])["status"] == "active"
    second = client.post(url, json={"name": "supervisor-2", "is_supervisor": True}, headers=daemon.headers)
    assert (second.status_code, second.json()["error"]["code"]) == (409, "CONFLICT")
    # once the first supervisor has finished, a new one may start
    tid = sup.json()["id"]
    assert (
        client.post(
            f"{url}/{tid}/status", json={"status": "failed", "error": "crashed"}, headers=daemon.headers
        ).status_code
        == 200
    )
    assert (
        client.post(url, json={"name": "supervisor-2", "is_supervisor": True}, headers=daemon.headers).status_code
        == 201
    )


def test_task_lifecycle_records_events(client: TestClient, user: Caller, new_contract: NewContract) -> None:
    c = new_contract(user)
    url = f"{API}/contracts/{c['id']}/tasks"
    t = client.post(url, json={"name": "write-tests"}, headers=user.headers).json()
    assert client.post(f"{url}/{t['id']}/status", json={"status": "running"}, headers=user.headers).json()["started_at"]
    done = client.post(f"{url}/{t['id']}/status", json={"status": "completed"}, headers=user.headers).json()
    assert done["status"] == "completed"
    assert done["finished_at"]
    again = client.post(f"{url}/{t['id']}/status", json={"status": "running"}, headers=user.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (400, "INVALID_TRANSITION")
    assert [x["id"] for x in client.get(url, headers=user.headers).json()["tasks"]] == [t["id"]]
    assert client.get(f"{url}/{t['id']}", headers=user.headers).json()["name"] == "write-tests"
    missing = client.get(f"{url}/00000000-0000-0000-0000-000000000000", headers=user.headers)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NOT_FOUND")
    events = client.get(f"{API}/contracts/{c['id']}/events", headers=user.headers).json()["events"]
    completed = next(e for e in events if e["type"] == "task_completed")
    assert completed["payload"]["task_name"] == "write-tests"
    assert completed["payload"]["success"] is True
    assert _types(client, user, c["id"]) == [
        "contract_created",
        "task_spawned",
        "task_started",
        "task_completed",
    ]


def test_no_new_work_on_a_paused_or_finished_contract(
    client: TestClient, user: Caller, new_contract: NewContract
) -> None:
    c = new_contract(user)
    client.post(
        f"{API}/contracts/{c['id']}/status",
        json={"status": "paused", "reason": "review"},
        headers=user.headers,
    )
    r = client.post(f"{API}/contracts/{c['id']}/tasks", json={"name": "x"}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_TRANSITION")
    r = client.post(
        f"{API}/contracts/{c['id']}/phase",
        json={"phase": "execute", "expected_version": 2},
        headers=user.headers,
    )
    assert r.json()["error"]["code"] == "INVALID_TRANSITION"
    client.post(f"{API}/contracts/{c['id']}/status", json={"status": "archived"}, headers=user.headers)
    r = client.post(
        f"{API}/contracts/{c['id']}/deliverables",
        json={"deliverable_id": "plan-document"},
        headers=user.headers,
    )
    assert r.json()["error"]["code"] == "INVALID_TRANSITION"


def test_question_round_trip(client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract) -> None:
    owner = make_caller()
    daemon = make_caller(daemon_for=owner)
    c = new_contract(owner)
    client.post(
        f"{API}/contracts/{c['id']}/tasks",
        json={"name": "supervisor", "is_supervisor": True},
        headers=daemon.headers,
    )
    qurl = f"{API}/contracts/{c['id']}/questions"
    # Given an active contract, when its supervisor asks two questions
    q1 = client.post(
        qurl,
        json={"question": "Which database?", "question_type": "choice", "options": ["pg", "mysql"]},
        headers=daemon.headers,
    ).json()
    q2 = client.post(qurl, json={"question": "Deadline?"}, headers=daemon.headers).json()
    # Then the contract waits for input naming the first question
    waiting = _contract(client, owner, c["id"])
    assert (waiting["status"], waiting["waiting_for"]) == ("waiting_for_input", f"question:{q1['id']}")
    assert [
        x["id"]
        for x in client.get(f"{API}/contracts", params={"waiting": True}, headers=owner.headers).json()["contracts"]
    ] == [c["id"]]
    # A daemon cannot answer for the owner
    r = client.post(f"{qurl}/{q1['id']}/answer", json={"answer": "pg"}, headers=daemon.headers)
    assert r.status_code == 403
    # When the owner answers the first, the contract waits on the second
    assert (
        client.post(f"{qurl}/{q1['id']}/answer", json={"answer": "pg"}, headers=owner.headers).json()["answer"] == "pg"
    )
    assert _contract(client, owner, c["id"])["waiting_for"] == f"question:{q2['id']}"
    assert client.post(f"{qurl}/{q1['id']}/answer", json={"answer": "again"}, headers=owner.headers).status_code == 409
    # When the second is answered, the contract is active again
    client.post(f"{qurl}/{q2['id']}/answer", json={"answer": "Friday"}, headers=owner.headers)
    active = _contract(client, owner, c["id"])
    assert (active["status"], active["waiting_for"]) == ("active", None)
    # And the answers reach the supervisor until it acknowledges them
    pending = client.get(qurl, params={"status": "answered", "undelivered": True}, headers=daemon.headers).json()
    assert [(q["id"], q["answer"]) for q in pending["questions"]] == [(q1["id"], "pg"), (q2["id"], "Friday")]
    assert client.post(f"{qurl}/{q1['id']}/ack", headers=daemon.headers).json()["delivered_at"]
    pending = client.get(qurl, params={"undelivered": True, "status": "answered"}, headers=daemon.headers).json()
    assert [q["id"] for q in pending["questions"]] == [q2["id"]]
    types = _types(client, owner, c["id"])
    assert types.count("question_asked") == 2
    assert types.count("question_answered") == 2


def test_chat_messages(client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract) -> None:
    owner = make_caller()
    daemon = make_caller(daemon_for=owner)
    c = new_contract(owner)
    url = f"{API}/contracts/{c['id']}/messages"
    assert client.post(url, json={"content": "hello"}, headers=owner.headers).json()["role"] == "user"
    assert client.post(url, json={"content": "hi, working"}, headers=daemon.headers).json()["role"] == "supervisor"
    msgs = client.get(url, headers=owner.headers).json()["messages"]
    assert [(m["role"], m["content"]) for m in msgs] == [("user", "hello"), ("supervisor", "hi, working")]
    assert (
        client.get(url, params={"after_id": msgs[0]["id"]}, headers=owner.headers).json()["messages"][0]["content"]
        == "hi, working"
    )
    assert client.post(url, json={"content": ""}, headers=owner.headers).status_code == 422


# --- Task 1.5 -----------------------------------------------------------------------------------------


def _age(database_url: str, cid: str, minutes: int) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - make_interval(mins => %s) WHERE id = %s",
            (minutes, cid),
        )


def _activity(database_url: str, cid: str) -> datetime:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT last_activity_at FROM contracts WHERE id = %s", (cid,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_activity_moves_on_each_kind_of_work(
    client: TestClient, user: Caller, new_contract: NewContract, database_url: str
) -> None:
    c = new_contract(user)
    cid = c["id"]
    base = f"{API}/contracts/{cid}"
    task: dict[str, Any] = {}

    def spawn() -> None:
        task.update(client.post(f"{base}/tasks", json={"name": "t"}, headers=user.headers).json())

    operations: list[tuple[str, Callable[[], Any]]] = [
        (
            "deliverable",
            lambda: client.post(f"{base}/deliverables", json={"deliverable_id": "plan-document"}, headers=user.headers),
        ),
        ("task spawned", spawn),
        (
            "task completed",
            lambda: client.post(
                f"{base}/tasks/{task['id']}/status", json={"status": "completed"}, headers=user.headers
            ),
        ),
        (
            "chat message",
            lambda: client.post(f"{base}/messages", json={"content": "hi"}, headers=user.headers),
        ),
        (
            "phase change",
            lambda: client.post(
                f"{base}/phase", json={"phase": "execute", "expected_version": 1}, headers=user.headers
            ),
        ),
    ]
    for name, operation in operations:
        _age(database_url, cid, 120)
        before = _activity(database_url, cid)
        operation()
        assert _activity(database_url, cid) > before, f"{name} must move last_activity_at"


def test_stale_listing_by_threshold(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract, database_url: str
) -> None:
    me = make_caller()
    fresh, old, ancient, done = (new_contract(me, name=n)["id"] for n in ("fresh", "old", "ancient", "done"))
    _age(database_url, old, 45)
    _age(database_url, ancient, 60 * 24 * 3)
    _age(database_url, done, 60 * 24 * 3)
    client.post(f"{API}/contracts/{done}/status", json={"status": "archived"}, headers=me.headers)
    _age(database_url, done, 60 * 24 * 3)

    def stale(**params: Any) -> set[str]:
        r = client.get(f"{API}/contracts", params={"stale": True, **params}, headers=me.headers)
        assert r.status_code == 200
        return {x["id"] for x in r.json()["contracts"]}

    assert stale() == {old, ancient}  # default threshold 30m; terminal contracts are never stale
    assert stale(threshold="2h") == {ancient}
    assert stale(threshold="7d") == set()
    assert stale(threshold="10") == {old, ancient}
    assert fresh not in stale(threshold="30m")
    assert done not in stale(threshold="1s")
