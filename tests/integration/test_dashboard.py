"""Seed 5.4: the dashboard's counts, stale and waiting lists, events and resource usage, owner-scoped,
and the monitoring_dashboard feature flag."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import FeatureFlagsConfig, Settings
from makima.db.connection import PooledDatabase
from makima.domain.principals import Role
from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"


def test_dashboard_counts_and_lists_what_the_owner_has(
    client: TestClient, make_caller: Callable[..., Caller], database_url: str
) -> None:
    me, other = make_caller(), make_caller()
    h = me.headers

    def contract(name: str, **fields: object) -> str:
        return str(client.post(f"{API}/contracts", json={"name": name, **fields}, headers=h).json()["id"])

    idle, asking, done = contract("idle"), contract("asking"), contract("done", contract_type="specification")
    client.post(f"{API}/contracts", json={"name": "not mine"}, headers=other.headers)
    daemon = client.post(f"{API}/daemons", json={"name": "dash-host"}, headers=h).json()["id"]
    sup = client.post(f"{API}/contracts/{asking}/supervisor", json={"daemon_id": daemon}, headers=h).json()
    q = client.post(f"{API}/contracts/{asking}/questions", json={"question": "Ship on Friday?"}, headers=h).json()
    client.post(f"{API}/contracts/{asking}/tasks", json={"name": "build"}, headers=h)
    client.post(
        f"{API}/daemons/{daemon}/heartbeat",
        json={"worktrees": [{"path": "/wt/a", "task_id": sup["supervisor"]["task_id"]}]},
        headers=h,
    )
    client.post(f"{API}/contracts/{done}/status", json={"status": "active"}, headers=h)
    client.post(f"{API}/contracts/{done}/status", json={"status": "completed"}, headers=h)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - interval '2 hours' WHERE id IN (%s, %s)", (idle, done)
        )

    r = client.get(f"{API}/contracts/dashboard", headers=h)
    assert r.status_code == 200, r.text
    d = r.json()
    assert set(d) == {
        "statusCounts",
        "phaseCounts",
        "staleContracts",
        "waitingForInput",
        "recentEvents",
        "resourceUsage",
    }
    assert d["statusCounts"] == {"created": 1, "waiting_for_input": 1, "completed": 1}
    assert d["phaseCounts"] == {"plan": 2}  # the completed contract's phase is history
    assert [s["id"] for s in d["staleContracts"]] == [idle]  # completed contracts are never stale
    assert d["staleContracts"][0]["staleDurationSecs"] >= 7200 - 5
    assert d["waitingForInput"] == [
        {"id": asking, "name": "asking", "waitingFor": "question", "question": "Ship on Friday?"}
    ]
    assert d["recentEvents"][0]["type"] == "status_changed"  # newest first
    assert all(e["contract_id"] in {idle, asking, done} for e in d["recentEvents"])
    assert d["resourceUsage"] == {
        "activeSupervisors": 1,
        "runningTasks": 0,
        "pendingTasks": 2,
        "activeDaemons": 1,
        "totalWorktrees": 1,
    }
    assert q["id"]


def test_admins_see_everyone(client: TestClient, make_caller: Callable[..., Caller]) -> None:
    admin, a = make_caller(role=Role.ADMIN), make_caller()
    client.post(f"{API}/contracts", json={"name": "x"}, headers=a.headers)
    mine = client.get(f"{API}/contracts/dashboard", headers=a.headers).json()["statusCounts"]
    everyone = client.get(f"{API}/contracts/dashboard", headers=admin.headers).json()["statusCounts"]
    assert mine == {"created": 1}
    assert everyone["created"] >= 1
    assert sum(everyone.values()) > sum(mine.values())


def test_dashboard_flag_off_disables_it(db: PooledDatabase, user: Caller) -> None:
    settings = Settings(feature_flags=FeatureFlagsConfig(monitoring_dashboard=False))
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as off:
        r = off.get(f"{API}/contracts/dashboard", headers=user.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "FEATURE_DISABLED")
        assert r.json()["error"]["details"] == {"feature": "monitoring_dashboard"}
        # and the path is not mistaken for a contract id either way
        assert off.get(f"{API}/contracts", headers=user.headers).status_code == 200


def test_contracts_waiting_for_a_reason_or_a_confirmation_are_listed_too(
    client: TestClient, make_caller: Callable[..., Caller]
) -> None:
    """``waiting_for`` is a question (``question:<id>``), a confirmation or a free reason: only the first
    is a question's id. The join once cast every one of them to uuid, and the dashboard answered 500."""
    me = make_caller()
    h = me.headers

    def waiting(name: str, reason: str | None) -> str:
        cid = str(client.post(f"{API}/contracts", json={"name": name}, headers=h).json()["id"])
        assert client.post(f"{API}/contracts/{cid}/status", json={"status": "active"}, headers=h).status_code == 200
        if reason is None:
            r = client.post(f"{API}/contracts/{cid}/questions", json={"question": "Which region?"}, headers=h)
            assert r.status_code == 201, r.text
        else:
            r = client.post(
                f"{API}/contracts/{cid}/status", json={"status": "waiting_for_input", "reason": reason}, headers=h
            )
            assert r.status_code == 200, r.text
        return cid

    asked = waiting("asked", None)
    reason = waiting("reason", "a human must sign the release")
    confirm = waiting("confirm", "phase_confirmation:execute")
    r = client.get(f"{API}/contracts/dashboard", headers=h)
    assert r.status_code == 200, r.text
    listed = {w["id"]: w for w in r.json()["waitingForInput"]}
    assert set(listed) == {asked, reason, confirm}
    assert listed[asked]["question"] == "Which region?"
    assert listed[reason]["question"] is None
    assert listed[confirm]["question"] is None
