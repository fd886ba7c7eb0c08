"""Issue 13, defect 6: every list of the API is paged (``limit`` + an opaque ``cursor``, ``next_cursor``
in the answer), and a walk of small pages yields each item exactly once, in the order of one big page.

The lists used to come back whole: a daemon's worktrees were 4.1 MB after two reports, and a contract's
tasks and questions grew without end.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.domain.principals import Role
from tests.conftest import Caller
from tests.integration.test_supervisors import API, start

pytestmark = pytest.mark.integration

# GET routes that answer a list but are not paged, and why.
NOT_PAGED = {
    "/api/v1/contracts/{contract_id}": "phases and deliverables of one contract type (bounded by the type)",
    "/api/v1/contracts/{contract_id}/deliverables": "the type's deliverables (bounded by the type)",
    "/api/v1/contracts/{contract_id}/phase-readiness": "one phase's gate (bounded by the type)",
    "/api/v1/contracts/{contract_id}/supervisor/status": "pending_task_ids: at most 1000 by the heartbeat",
    "/api/v1/contracts/{contract_id}/supervisor/state": "one supervisor's persisted state (its own endpoint)",
    "/api/v1/contracts/dashboard": "aggregates and top-N lists of fixed size",
    "/api/v1/contract-types/{name}": "one type",
    "/api/v1/checkpoints/tuple": "one checkpoint's pending writes: bounded by [checkpoints] max_checkpoint_bytes",
}


def walk(
    client: TestClient, url: str, key: str, headers: dict[str, str], limit: int, until: int | None = None, **params: Any
) -> list[Any]:
    """Every item of the list (or its first ``until`` and a little more), following next_cursor with pages
    of ``limit``."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(1000):
        if until is not None and len(items) >= until:
            return items
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = client.get(url, params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page[key]) <= limit
        items.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page[key], "a page with a next_cursor has items"
    raise AssertionError("the cursor never ended")


def whole(client: TestClient, url: str, key: str, headers: dict[str, str], **params: Any) -> list[Any]:
    """The whole list in pages of 500 (a session's database may hold more users than one page)."""
    return walk(client, url, key, headers, 500, **params)


def _ident(item: Any) -> Any:
    return item.get("id") or item.get("name") or item.get("path") or (item.get("received_at"), item.get("timestamp"))


def check_paged(client: TestClient, url: str, key: str, headers: dict[str, str], at_least: int, **params: Any) -> None:
    full = whole(client, url, key, headers, **params)
    assert len(full) >= at_least, full
    for limit in (1, 2, 3):
        # (compared by identity: last_used_at of the caller's own token moves between requests; a list
        # the rest of the session made long, the users', is walked for its first 30 items)
        walked = walk(client, url, key, headers, limit, until=30, **params)
        assert [_ident(x) for x in walked] == [_ident(x) for x in full[: len(walked)]]
        assert len(walked) >= min(len(full), 30)
    # a cursor from elsewhere is a 400, and the limit is bounded
    r = client.get(url, params={**params, "cursor": "bm90LWEtY3Vyc29y"}, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "BAD_REQUEST"), r.text
    r = client.get(url, params={**params, "limit": 100_000}, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), r.text


def test_every_list_route_takes_limit_and_cursor_and_answers_next_cursor(client: TestClient) -> None:
    # Given the OpenAPI document: every GET whose answer holds an array at its top
    doc = client.get(f"{API}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    unpaged = []
    for path, item in doc["paths"].items():
        op = item.get("get")
        if op is None or path in NOT_PAGED:
            continue
        ref = op["responses"]["200"]["content"].get("application/json", {}).get("schema", {}).get("$ref")
        if ref is None:
            continue
        props = schemas[ref.rsplit("/", 1)[-1]].get("properties", {})
        if not any(p.get("type") == "array" for p in props.values()):
            continue
        params = {p["name"]: p for p in op.get("parameters", [])}
        # Then it is paged: a bounded limit, a cursor, and next_cursor in the answer
        if not ({"limit", "cursor"} <= set(params) and "next_cursor" in props):
            unpaged.append(path)
            continue
        assert params["limit"]["schema"].get("maximum", 10**9) <= 1000, path
        assert params["cursor"]["schema"].get("anyOf", [{}])[0].get("maxLength") or params["cursor"]["schema"].get(
            "maxLength"
        ), path
    assert not unpaged, f"lists without paging: {unpaged}"


def test_tasks_questions_messages_and_events_page(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: Callable[..., dict[str, Any]]
) -> None:
    owner = make_caller()
    daemon = make_caller(daemon_for=owner)
    c = new_contract(owner)
    base = f"{API}/contracts/{c['id']}"
    client.post(f"{base}/tasks", json={"name": "supervisor", "is_supervisor": True}, headers=daemon.headers)
    for i in range(6):
        assert client.post(f"{base}/tasks", json={"name": f"t{i}"}, headers=owner.headers).status_code == 201
        r = client.post(f"{base}/questions", json={"question": f"q{i}?"}, headers=daemon.headers)
        assert r.status_code == 201, r.text
        assert client.post(f"{base}/messages", json={"content": f"m{i}"}, headers=owner.headers).status_code == 201
    check_paged(client, f"{base}/tasks", "tasks", owner.headers, 7)
    check_paged(client, f"{base}/questions", "questions", owner.headers, 6)
    check_paged(client, f"{base}/questions", "questions", owner.headers, 6, status="pending")
    check_paged(client, f"{base}/messages", "messages", owner.headers, 6)
    check_paged(client, f"{base}/events", "events", owner.headers, 6)


def test_events_and_messages_still_continue_from_after_id(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    c = new_contract(user)
    base = f"{API}/contracts/{c['id']}"
    for i in range(3):
        client.post(f"{base}/messages", json={"content": f"m{i}"}, headers=user.headers)
    first = client.get(f"{base}/events", params={"limit": 1}, headers=user.headers).json()
    rest = client.get(f"{base}/events", params={"after_id": first["last_id"]}, headers=user.headers).json()
    assert next(e["id"] for e in rest["events"]) > first["last_id"]
    both = client.get(
        f"{base}/events", params={"after_id": first["last_id"], "cursor": first["next_cursor"]}, headers=user.headers
    )
    assert (both.status_code, both.json()["error"]["code"]) == (400, "BAD_REQUEST")
    # a cursor of another list, or a tampered one, is a 400 before it reaches the database
    for key in ([10**22], [-1], ["x"], [1, 2], {"id": 1}):
        cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")
        r = client.get(f"{base}/messages", params={"cursor": cursor}, headers=user.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "BAD_REQUEST"), (key, r.text)
    msgs = client.get(f"{base}/messages", headers=user.headers).json()["messages"]
    after = client.get(f"{base}/messages", params={"after_id": msgs[0]["id"]}, headers=user.headers).json()
    assert [m["id"] for m in after["messages"]] == [m["id"] for m in msgs[1:]]


def test_users_tokens_and_contract_types_page(client: TestClient, make_caller: Callable[..., Caller]) -> None:
    admin = make_caller(Role.ADMIN)
    user = make_caller()
    for i in range(4):
        r = client.post(f"{API}/users/{user.principal.user_id}/tokens", json={"name": f"k{i}"}, headers=admin.headers)
        assert r.status_code == 201, r.text
    check_paged(client, f"{API}/users", "users", admin.headers, 2)
    check_paged(client, f"{API}/users/{user.principal.user_id}/tokens", "tokens", user.headers, 5)
    check_paged(client, f"{API}/contract-types", "contract_types", user.headers, 2)


def test_worktrees_and_reassignable_tasks_page(client: TestClient, make_caller: Callable[..., Caller]) -> None:
    owner = make_caller()
    daemon = client.post(f"{API}/daemons", json={"name": "pager"}, headers=owner.headers).json()
    # (the last one as long as a Linux path gets: its cursor still fits a request line)
    worktrees = [{"path": f"/w/{i:02d}-é", "branch": f"b{i}"} for i in range(7)] + [{"path": "/x" + "y" * 4094}]
    r = client.post(f"{API}/daemons/{daemon['id']}/heartbeat", json={"worktrees": worktrees}, headers=owner.headers)
    assert r.status_code == 200, r.text
    check_paged(client, f"{API}/daemons/{daemon['id']}/worktrees", "worktrees", owner.headers, 7)
    # supervisors started without a daemon are adoptable
    for i in range(4):
        c = client.post(f"{API}/contracts", json={"name": f"r{i}"}, headers=owner.headers).json()
        assert client.post(f"{API}/contracts/{c['id']}/supervisor", json={}, headers=owner.headers).status_code == 201
    check_paged(client, f"{API}/tasks/reassignable", "tasks", owner.headers, 4)


def test_a_daemon_reports_at_most_1000_worktrees(client: TestClient, user: Caller) -> None:
    daemon = client.post(f"{API}/daemons", json={"name": "many"}, headers=user.headers).json()
    report = {"worktrees": [{"path": f"/{i}"} for i in range(1001)]}
    r = client.post(f"{API}/daemons/{daemon['id']}/heartbeat", json=report, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), r.text


def test_heartbeat_history_pages_through_heartbeats_of_one_instant(client: TestClient, user: Caller) -> None:
    # Given heartbeats of one supervisor, two of them in one batch with the same timestamp (same key)
    sup = start(client, user, name="history-pager")
    sent = datetime.now(UTC) - timedelta(seconds=30)
    for i in range(3):
        assert sup.beat(progress=i, timestamp=(sent + timedelta(seconds=i)).isoformat()).status_code == 200
    same = {"task_id": sup.task_id, "contract_id": sup.contract_id, "state": "working", "phase": "plan"}
    at = (sent + timedelta(seconds=5)).isoformat()
    batch = {"heartbeats": [{**same, "timestamp": at, "progress": p} for p in (40, 41, 42)]}
    assert client.post(f"{API}/supervisors/heartbeats", json=batch, headers=user.headers).json()["accepted"] == 3
    # Then pages of any size give the six, newest first, each once
    url = sup.url("/supervisor/heartbeats")
    full = whole(client, url, "heartbeats", user.headers)
    assert sorted(h["progress"] for h in full) == [0, 1, 2, 40, 41, 42]
    for limit in (1, 2, 4):
        assert walk(client, url, "heartbeats", user.headers, limit) == full, limit
