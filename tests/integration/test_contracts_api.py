"""Phase 1 over the HTTP API, in-process against the real database: Tasks 1.1-1.5."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"
NewContract = Callable[..., dict[str, Any]]


def events_of(client: TestClient, caller: Caller, cid: str) -> list[dict[str, Any]]:
    r = client.get(f"{API}/contracts/{cid}/events", headers=caller.headers)
    assert r.status_code == 200
    return list(r.json()["events"])


def test_create_answers_the_contract(client: TestClient, user: Caller) -> None:
    r = client.post(
        f"{API}/contracts",
        json={
            "name": "Auth service",
            "description": "JWT",
            "contract_type": "specification",
            "phase_guard": True,
        },
        headers=user.headers,
    )
    assert r.status_code == 201
    c = r.json()
    assert c["contract_type"] == "specification"
    assert c["phase"] == "research"
    assert c["status"] == "created"
    assert c["version"] == 1
    assert c["phase_guard"] is True
    # old field names keep working beside the new ones
    assert (c["type"], c["current_phase"], c["legacy_status"]) == ("specification", "research", "active")
    assert [e["type"] for e in events_of(client, user, c["id"])] == ["contract_created"]


def test_unknown_contract_type_is_a_clear_400(client: TestClient, user: Caller) -> None:
    r = client.post(f"{API}/contracts", json={"name": "x", "contract_type": "nope"}, headers=user.headers)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_FAILED"
    assert set(err["details"]["valid_contract_types"]) >= {"simple", "specification"}


# --- Task 1.1 -----------------------------------------------------------------------------------------


def test_invalid_deliverable_is_400_with_valid_ids_and_writes_nothing(
    client: TestClient, user: Caller, new_contract: NewContract, database_url: str
) -> None:
    c = new_contract(user)
    r = client.post(f"{API}/contracts/{c['id']}/deliverables", json={"deliverable_id": "bogus"}, headers=user.headers)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "INVALID_DELIVERABLE"
    assert err["details"]["valid_deliverables"] == ["plan-document"]
    # a deliverable of another phase is just as invalid
    r = client.post(
        f"{API}/contracts/{c['id']}/deliverables",
        json={"deliverable_id": "implementation"},
        headers=user.headers,
    )
    assert r.json()["error"]["code"] == "INVALID_DELIVERABLE"
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM completed_deliverables WHERE contract_id = %s", (c["id"],)
        ).fetchone() == (0,)
    assert [e["type"] for e in events_of(client, user, c["id"])] == ["contract_created"]


def test_valid_deliverable_is_recorded_once(client: TestClient, user: Caller, new_contract: NewContract) -> None:
    c = new_contract(user)
    url = f"{API}/contracts/{c['id']}/deliverables"
    first = client.post(url, json={"deliverable_id": "plan-document"}, headers=user.headers)
    assert first.status_code == 200
    assert first.json()["already_completed"] is False
    again = client.post(url, json={"deliverable_id": "plan-document", "phase": "plan"}, headers=user.headers)
    assert again.json()["already_completed"] is True
    # deliverables of a later phase may be recorded ahead of time
    later = client.post(url, json={"deliverable_id": "pull-request", "phase": "execute"}, headers=user.headers)
    assert later.status_code == 200
    assert [e["type"] for e in events_of(client, user, c["id"])].count("deliverable_completed") == 2
    listing = client.get(url, headers=user.headers).json()
    done = {(p["id"], d["id"]): d["completed"] for p in listing["phases"] for d in p["deliverables"]}
    assert done == {
        ("plan", "plan-document"): True,
        ("execute", "implementation"): False,
        ("execute", "pull-request"): True,
    }
    detail = client.get(f"{API}/contracts/{c['id']}", headers=user.headers).json()
    assert detail["deliverables"] == [
        {
            "id": "plan-document",
            "name": "Plan document",
            "completed": True,
            "completed_at": detail["deliverables"][0]["completed_at"],
        }
    ]


# --- Task 1.2 -----------------------------------------------------------------------------------------


def test_phase_change_checks_the_expected_version(client: TestClient, user: Caller, new_contract: NewContract) -> None:
    c = new_contract(user)
    url = f"{API}/contracts/{c['id']}/phase"
    ok = client.post(url, json={"phase": "execute", "expected_version": 1, "force": True}, headers=user.headers)
    assert ok.status_code == 200
    assert (ok.json()["phase"], ok.json()["version"]) == ("execute", 2)
    stale = client.post(url, json={"phase": "plan", "expected_version": 1}, headers=user.headers)
    assert stale.status_code == 409
    err = stale.json()["error"]
    assert err["code"] == "VERSION_CONFLICT"
    assert err["details"] == {
        "expected": 1,
        "actual": 2,
        "current_phase": "execute",
        "current_status": "created",
    }
    evs = [e for e in events_of(client, user, c["id"]) if e["type"] == "phase_changed"]
    assert len(evs) == 1
    assert evs[0]["payload"]["old_phase"] == "plan"
    assert evs[0]["payload"]["new_phase"] == "execute"
    assert evs[0]["actor"] == user.principal.actor


def test_phase_change_to_unknown_or_same_phase(client: TestClient, user: Caller, new_contract: NewContract) -> None:
    c = new_contract(user)
    url = f"{API}/contracts/{c['id']}/phase"
    r = client.post(url, json={"phase": "review", "expected_version": 1}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "VALIDATION_FAILED")
    assert r.json()["error"]["details"]["valid_phases"] == ["plan", "execute"]
    r = client.post(url, json={"phase": "plan", "expected_version": 1}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_TRANSITION")


# --- Task 1.3 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_daemon", [False, True], ids=["owner", "supervisor-daemon"])
def test_phase_guard_is_enforced_for_every_caller(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract, as_daemon: bool
) -> None:
    owner = make_caller()
    caller = make_caller(daemon_for=owner) if as_daemon else owner
    c = new_contract(owner, phase_guard=True)
    client.post(
        f"{API}/contracts/{c['id']}/deliverables",
        json={"deliverable_id": "plan-document"},
        headers=caller.headers,
    )
    url = f"{API}/contracts/{c['id']}/phase"
    blocked = client.post(url, json={"phase": "execute", "expected_version": 1}, headers=caller.headers)
    assert blocked.status_code == 409
    err = blocked.json()["error"]
    assert err["code"] == "PHASE_GUARD_REQUIRED"
    assert err["details"]["deliverables"] == [{"id": "plan-document", "name": "Plan document", "completed": True}]
    assert (err["details"]["completed_count"], err["details"]["total_count"]) == (1, 1)
    unchanged = client.get(f"{API}/contracts/{c['id']}", headers=owner.headers).json()
    assert (unchanged["phase"], unchanged["version"]) == ("plan", 1)
    confirmed = client.post(
        url, json={"phase": "execute", "expected_version": 1, "confirmed": True}, headers=caller.headers
    )
    assert confirmed.status_code == 200
    assert confirmed.json()["phase"] == "execute"


# --- Task 1.4 -----------------------------------------------------------------------------------------


def test_status_changes_follow_the_table_and_record_events(
    client: TestClient, user: Caller, new_contract: NewContract
) -> None:
    c = new_contract(user)
    url = f"{API}/contracts/{c['id']}/status"

    def move(status: str, reason: str | None = None, **extra: Any) -> Any:
        return client.post(url, json={"status": status, "reason": reason, **extra}, headers=user.headers)

    assert move("waiting_for_input").json()["error"]["code"] == "INVALID_TRANSITION"
    r = move("active", "supervisor started")
    assert r.status_code == 200
    r = move("blocked", "waiting on API keys")
    assert (r.json()["status"], r.json()["blocked_reason"]) == ("blocked", "waiting on API keys")
    r = move("active", expected_version=1)
    assert r.status_code == 409
    r = move("active", expected_version=r.json()["error"]["details"]["actual"])
    assert (r.json()["status"], r.json()["blocked_reason"]) == ("active", None)
    r = move("failed", "out of budget")
    assert (r.json()["failure_reason"], r.json()["legacy_status"]) == ("out of budget", "completed")
    bad = move("paused")
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["allowed"] == ["active", "archived"]
    changes = [e["payload"] for e in events_of(client, user, c["id"]) if e["type"] == "status_changed"]
    assert [(p["old_status"], p["new_status"], p["reason"]) for p in changes] == [
        ("created", "active", "supervisor started"),
        ("active", "blocked", "waiting on API keys"),
        ("blocked", "active", None),
        ("active", "failed", "out of budget"),
    ]


def test_legacy_statuses_still_work(client: TestClient, user: Caller, new_contract: NewContract) -> None:
    c = new_contract(user)
    url = f"{API}/contracts/{c['id']}/status"
    for status in ("active", "completed", "archived"):
        r = client.post(url, json={"status": status}, headers=user.headers)
        assert r.status_code == 200, r.text
        assert r.json()["legacy_status"] == status
    listed = client.get(f"{API}/contracts", params={"status": "archived"}, headers=user.headers).json()
    assert [x["id"] for x in listed["contracts"]] == [c["id"]]


def test_unknown_status_is_rejected(client: TestClient, user: Caller, new_contract: NewContract) -> None:
    c = new_contract(user)
    r = client.post(f"{API}/contracts/{c['id']}/status", json={"status": "exploded"}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST")


# --- update, list, pagination -------------------------------------------------------------------------


def test_update_bumps_version_and_checks_it(client: TestClient, user: Caller, new_contract: NewContract) -> None:
    c = new_contract(user)
    url = f"{API}/contracts/{c['id']}"
    r = client.patch(url, json={"name": "renamed", "phase_guard": True, "expected_version": 1}, headers=user.headers)
    assert (r.json()["name"], r.json()["phase_guard"], r.json()["version"]) == ("renamed", True, 2)
    assert client.patch(url, json={"name": "again", "expected_version": 1}, headers=user.headers).status_code == 409
    assert client.patch(url, json={"bogus": 1}, headers=user.headers).status_code == 422


def test_list_filters_and_pagination(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract
) -> None:
    me = make_caller()
    ids = [new_contract(me, name=f"c{i}")["id"] for i in range(5)]
    client.post(f"{API}/contracts/{ids[0]}/status", json={"status": "active"}, headers=me.headers)
    client.post(
        f"{API}/contracts/{ids[1]}/phase",
        json={"phase": "execute", "expected_version": 1, "force": True},
        headers=me.headers,
    )

    def listed(**params: Any) -> list[str]:
        r = client.get(f"{API}/contracts", params=params, headers=me.headers)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["contracts"]]

    assert listed() == ids[::-1]
    assert listed(status="active") == [ids[0]]
    assert set(listed(status="active,created")) == set(ids)
    assert listed(phase="execute") == [ids[1]]
    assert listed(phase="execute", status="active") == []
    assert listed(waiting=True) == []
    # pages of two, newest first, stitched by cursor
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"{API}/contracts", params=params, headers=me.headers).json()
        seen += [x["id"] for x in page["contracts"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    bad = client.get(f"{API}/contracts", params={"status": "nope"}, headers=me.headers)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "BAD_REQUEST")
    bad = client.get(f"{API}/contracts", params={"cursor": "garbage"}, headers=me.headers)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "BAD_REQUEST")
    # the threshold's format is in the document (a pattern), so a bad one is refused like any parameter
    # against the schema; a duration too long for a date (more than five digits) too, not a 500
    for threshold in ("soon", "999999999w", "100000m"):
        bad = client.get(f"{API}/contracts", params={"stale": True, "threshold": threshold}, headers=me.headers)
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "INVALID_REQUEST"), threshold
    ok = client.get(f"{API}/contracts", params={"stale": True, "threshold": "99999w"}, headers=me.headers)
    assert ok.status_code == 200, ok.text
