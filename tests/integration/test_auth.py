"""Every endpoint with no token, a bad token, a revoked token and another owner's token."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller
from tests.routes import api_routes

pytestmark = pytest.mark.integration
API = "/api/v1"
PUBLIC = {("GET", f"{API}/health"), ("GET", f"{API}/openapi.json")}
ADMIN_ONLY = {
    ("POST", f"{API}/users"),
    ("GET", f"{API}/users"),
    ("POST", f"{API}/users/{{user_id}}/tokens"),
    ("PUT", f"{API}/contract-types/{{name}}"),
    ("POST", f"{API}/contracts/batch"),
    ("GET", "/metrics"),
}
# Routes outside /api/v1, which tests.routes.api_routes does not list: the Prometheus endpoint.
ROOT_ROUTES = [("GET", "/metrics")]
CUSTOM_TYPE = {
    "name": "auth-probe",
    "version": 1,
    "phases": [{"id": "only", "name": "Only", "deliverables": [{"id": "x", "name": "X"}]}],
}

NOW = datetime.now(UTC).isoformat()  # heartbeats must be recent to be considered at all

# A valid body per route, so that only authorisation can make a request fail.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", f"{API}/contracts"): {"name": "x"},
    ("PATCH", f"{API}/contracts/{{contract_id}}"): {"name": "y"},
    ("POST", f"{API}/contracts/{{contract_id}}/phase"): {"phase": "execute", "expected_version": 1},
    ("POST", f"{API}/contracts/{{contract_id}}/status"): {"status": "active"},
    ("POST", f"{API}/contracts/{{contract_id}}/deliverables"): {"deliverable_id": "plan-document"},
    ("POST", f"{API}/contracts/{{contract_id}}/check-completion"): {},
    ("PUT", f"{API}/contracts/{{contract_id}}/auto-complete"): {"enabled": False},
    ("POST", f"{API}/contracts/{{contract_id}}/tasks"): {"name": "t"},
    ("POST", f"{API}/contracts/{{contract_id}}/tasks/{{task_id}}/status"): {"status": "running"},
    ("POST", f"{API}/contracts/{{contract_id}}/questions"): {"question": "q?"},
    ("POST", f"{API}/contracts/{{contract_id}}/questions/{{question_id}}/answer"): {"answer": "a"},
    ("POST", f"{API}/contracts/{{contract_id}}/messages"): {"content": "m"},
    ("POST", f"{API}/users"): {"name": "someone"},
    ("POST", f"{API}/users/{{user_id}}/tokens"): {"name": "t"},
    ("POST", f"{API}/daemons"): {"name": "probe"},
    ("POST", f"{API}/daemons/{{daemon_id}}/heartbeat"): {},
    ("POST", f"{API}/contracts/{{contract_id}}/supervisor/sync"): {},
    ("POST", f"{API}/contracts/{{contract_id}}/supervisor/restore"): {},
    ("POST", f"{API}/contracts/{{contract_id}}/supervisor/restart"): {"reason": "probe"},
    ("POST", f"{API}/daemons/{{daemon_id}}/worktrees/removed"): {"paths": ["/w"]},
    ("POST", f"{API}/tasks/{{task_id}}/claim"): {"daemon_id": "00000000-0000-4000-8000-000000000000"},
    ("POST", f"{API}/contracts/{{contract_id}}/supervisor"): {},
    ("POST", f"{API}/contracts/{{contract_id}}/supervisor/heartbeat"): {
        "task_id": "00000000-0000-4000-8000-000000000000",
        "state": "working",
        "phase": "plan",
        "timestamp": NOW,
    },
    ("POST", f"{API}/supervisors/heartbeats"): {
        "heartbeats": [
            {
                "task_id": "00000000-0000-4000-8000-000000000000",
                "contract_id": "00000000-0000-4000-8000-000000000000",
                "state": "working",
                "phase": "plan",
                "timestamp": NOW,
            }
        ]
    },
    ("PUT", f"{API}/contracts/{{contract_id}}/supervisor/state"): {
        "generation": 1,
        "seq": 1,
        "save_point": "llm_response",
        "state": "working",
        "phase": "plan",
    },
    ("PUT", f"{API}/contract-types/{{name}}"): CUSTOM_TYPE,
    ("POST", f"{API}/contracts/batch"): {"operation": "pause_all", "dry_run": True},
    ("PUT", f"{API}/checkpoints"): {
        "thread_id": "auth-probe-thread",
        "checkpoint_id": "probe-1",
        "type": "msgpack",
        "checkpoint": "AA==",
    },
    ("PUT", f"{API}/checkpoints/writes"): {
        "thread_id": "auth-probe-thread",
        "checkpoint_id": "probe-1",
        "task_id": "t",
        "writes": [{"idx": 0, "channel": "c", "type": "msgpack", "value": "AA=="}],
    },
    ("POST", f"{API}/checkpoints/search"): {"thread_id": "auth-probe-thread"},
    ("POST", f"{API}/checkpoints/delete-runs"): {"run_ids": ["auth-probe-run"]},
    ("POST", f"{API}/checkpoints/copy"): {"source_thread_id": "auth-probe-thread", "target_thread_id": "auth-copy"},
    ("POST", f"{API}/checkpoints/prune"): {"thread_ids": ["auth-probe-thread"], "strategy": "delete"},
    ("POST", f"{API}/checkpoints/bind"): {"contract_id": "{contract_id}"},
}
# Query parameters a route needs besides its path's.
PARAMS: dict[tuple[str, str], dict[str, str]] = {
    ("GET", f"{API}/checkpoints/tuple"): {"thread_id": "auth-probe-thread"},
    ("DELETE", f"{API}/checkpoints"): {"thread_id": "auth-probe-thread"},
}
# LangGraph checkpoints are the caller's own store, not resources found by id: another owner's calls
# act on their own (empty) threads. What each answers them: test_another_owners_token_sees_no_checkpoint.
CHECKPOINTS = f"{API}/checkpoints"


def routes(client: TestClient) -> list[tuple[str, str]]:
    return api_routes(client.app.routes) + ROOT_ROUTES  # type: ignore[attr-defined]


@pytest.fixture
def world(client: TestClient, make_caller: Callable[..., Caller]) -> dict[str, Any]:
    """Owner A with a contract, a task, an answered question and a token; user B; a revoked token."""
    a, b = make_caller(), make_caller()
    h = a.headers
    c = client.post(f"{API}/contracts", json={"name": "a's"}, headers=h).json()
    t = client.post(f"{API}/contracts/{c['id']}/tasks", json={"name": "t"}, headers=h).json()
    client.post(f"{API}/contracts/{c['id']}/status", json={"status": "active"}, headers=h)
    q = client.post(f"{API}/contracts/{c['id']}/questions", json={"question": "?"}, headers=h).json()
    d = client.post(f"{API}/daemons", json={"name": "a-host"}, headers=h).json()
    started = client.post(f"{API}/contracts/{c['id']}/supervisor", json={"daemon_id": d["id"]}, headers=h)
    assert started.status_code == 201, started.text
    revoked = make_caller()
    client.delete(f"{API}/tokens/{revoked.principal.token_id}", headers=revoked.headers)
    ids = {
        "contract_id": c["id"],
        "task_id": t["id"],
        "question_id": q["id"],
        "user_id": str(a.principal.user_id),
        "token_id": str(a.principal.token_id),
        "name": "auth-probe",
        "daemon_id": d["id"],
    }
    return {"a": a, "b": b, "revoked": revoked, "ids": ids}


def call(client: TestClient, method: str, path: str, ids: dict[str, str], headers: dict[str, str]) -> Any:
    url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
    body = BODIES.get((method, path))
    if body is not None:  # ids named in a body ("{contract_id}")
        body = {
            k: ids[v[1:-1]] if isinstance(v, str) and v[1:-1] in ids and v.startswith("{") else v
            for k, v in body.items()
        }
    return client.request(method, url, json=body, params=PARAMS.get((method, path)), headers=headers)


def test_every_route_is_covered_by_a_body_or_takes_none(client: TestClient) -> None:
    for method, path in routes(client):
        if method in {"POST", "PATCH", "PUT"} and not path.endswith("/ack"):
            assert (method, path) in BODIES, f"add a valid body for {method} {path}"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer mkm_not-a-real-token"}, {"Authorization": "Basic Zm9vOmJhcg=="}],
    ids=["no-token", "bad-token", "wrong-scheme"],
)
def test_every_non_public_route_needs_a_valid_token(
    client: TestClient, world: dict[str, Any], headers: dict[str, str]
) -> None:
    for method, path in routes(client):
        r = call(client, method, path, world["ids"], headers)
        if (method, path) in PUBLIC:
            assert r.status_code == 200, (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.json()["error"]["code"] == "UNAUTHORIZED"


def test_a_revoked_token_is_refused_everywhere(client: TestClient, world: dict[str, Any]) -> None:
    for method, path in routes(client):
        if (method, path) not in PUBLIC:
            assert call(client, method, path, world["ids"], world["revoked"].headers).status_code == 401


def test_another_owners_token_sees_nothing(client: TestClient, world: dict[str, Any]) -> None:
    for method, path in routes(client):
        if (
            (method, path) in PUBLIC
            or (method, path)
            in {
                ("GET", f"{API}/contracts"),
                ("POST", f"{API}/contracts"),
                ("GET", f"{API}/contract-types"),
                ("GET", f"{API}/contract-types/{{name}}"),
                ("POST", f"{API}/daemons"),  # B registers a daemon of B's own
                ("GET", f"{API}/tasks/reassignable"),  # B's own (empty) list
                (
                    "GET",
                    f"{API}/contracts/dashboard",
                ),  # B's own dashboard (scoping: tests/integration/test_dashboard.py)
            }
            or path.startswith(CHECKPOINTS)
        ):
            continue
        if (method, path) == ("POST", f"{API}/supervisors/heartbeats"):
            r = call(client, method, path, world["ids"], world["b"].headers)
            assert r.json()["accepted"] == 0  # nothing of A's is touched
            continue
        r = call(client, method, path, world["ids"], world["b"].headers)
        if (method, path) in ADMIN_ONLY:
            assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN"), (method, path)
        elif "{contract_id}" in path:
            assert (r.status_code, r.json()["error"]["code"]) == (404, "CONTRACT_NOT_FOUND"), (method, path)
        else:
            assert r.status_code == 404, (method, path, r.status_code)
    # and B's own listing does not contain A's contract
    listed = client.get(f"{API}/contracts", headers=world["b"].headers).json()["contracts"]
    assert world["ids"]["contract_id"] not in {c["id"] for c in listed}


def test_another_owners_token_sees_no_checkpoint(client: TestClient, world: dict[str, Any]) -> None:
    a, b, ids = world["a"].headers, world["b"].headers, world["ids"]
    # Given A's checkpoint, with a write, in the probe thread (and a run id)
    put = {**BODIES[("PUT", CHECKPOINTS)], "metadata": {"run_id": "auth-probe-run"}}
    assert client.put(CHECKPOINTS, json=put, headers=a).status_code == 200
    assert call(client, "PUT", f"{CHECKPOINTS}/writes", ids, a).status_code == 200
    expected = {
        ("PUT", CHECKPOINTS): (200, None),  # B's own thread of that name
        ("PUT", f"{CHECKPOINTS}/writes"): (200, None),
        ("GET", f"{CHECKPOINTS}/tuple"): (200, None),  # B's own checkpoint, just put
        ("POST", f"{CHECKPOINTS}/search"): (200, None),
        ("POST", f"{CHECKPOINTS}/delete-runs"): (200, 0),
        ("POST", f"{CHECKPOINTS}/copy"): (200, None),
        ("POST", f"{CHECKPOINTS}/prune"): (200, None),
        ("DELETE", CHECKPOINTS): (200, None),
        ("POST", f"{CHECKPOINTS}/bind"): (404, None),  # A's contract
    }
    routes_here = [(m, p) for m, p in routes(client) if p.startswith(CHECKPOINTS)]
    assert set(routes_here) == set(expected)
    for method, path in expected:  # in this order: B's put first, its delete last but for bind
        r = call(client, method, path, ids, b)
        status, count = expected[(method, path)]
        assert r.status_code == status, (method, path, r.text)
        if count is not None:
            assert r.json()["count"] == count, (method, path)
        if (method, path) == ("GET", f"{CHECKPOINTS}/tuple"):
            assert r.json()["pending_writes"][0]["task_id"] == "t"  # B's write, not A's
        if (method, path) == ("POST", f"{CHECKPOINTS}/bind"):
            assert r.json()["error"]["code"] == "CONTRACT_NOT_FOUND"
    # Then A's checkpoint and write are whole, and A alone sees the run
    mine = client.get(f"{CHECKPOINTS}/tuple", params={"thread_id": "auth-probe-thread"}, headers=a).json()
    assert mine["metadata"] == {"run_id": "auth-probe-run"}
    assert len(mine["pending_writes"]) == 1
    assert client.get(f"{CHECKPOINTS}/tuple", params={"thread_id": "auth-copy"}, headers=a).status_code == 404


def test_admin_sees_and_manages_across_owners(
    client: TestClient, world: dict[str, Any], make_caller: Callable[..., Caller]
) -> None:
    from makima.domain.principals import Role

    admin = make_caller(role=Role.ADMIN)
    cid = world["ids"]["contract_id"]
    assert client.get(f"{API}/contracts/{cid}", headers=admin.headers).status_code == 200
    user = client.post(f"{API}/users", json={"name": f"carol-{cid[:8]}"}, headers=admin.headers).json()
    assert client.post(f"{API}/users", json={"name": user["name"]}, headers=admin.headers).status_code == 409
    issued = client.post(f"{API}/users/{user['id']}/tokens", json={"kind": "daemon"}, headers=admin.headers).json()
    assert issued["token"].startswith("mkm_")
    listed = client.get(f"{API}/users/{user['id']}/tokens", headers=admin.headers).json()["tokens"]
    assert [t["id"] for t in listed] == [issued["id"]]
    assert "token" not in listed[0]  # the secret is shown once only
    daemon_headers = {"Authorization": f"Bearer {issued['token']}"}
    assert client.get(f"{API}/contracts", headers=daemon_headers).status_code == 200
    assert client.delete(f"{API}/tokens/{issued['id']}", headers=admin.headers).status_code == 204
    assert client.get(f"{API}/contracts", headers=daemon_headers).status_code == 401


# What only a person may do (README, docs/api.md "Principals"): everything admin-only, managing tokens
# (a daemon may revoke only itself: tests/integration/test_authz.py) and answering questions.
PERSON_ONLY = ADMIN_ONLY | {
    ("GET", f"{API}/users/{{user_id}}/tokens"),
    ("DELETE", f"{API}/tokens/{{token_id}}"),
    ("POST", f"{API}/contracts/{{contract_id}}/questions/{{question_id}}/answer"),
}


def test_a_daemon_token_is_refused_exactly_what_only_a_person_may_do(
    client: TestClient, world: dict[str, Any], make_caller: Callable[..., Caller]
) -> None:
    # Given a daemon token of A (the owner of every id in the world)
    daemon = make_caller(daemon_for=world["a"])
    for method, path in routes(client):
        if (method, path) in PUBLIC:
            continue
        # When it calls each route with A's ids (a sync that does not wait for the supervisor)
        if path.endswith("/supervisor/sync"):
            url = path.replace("{contract_id}", world["ids"]["contract_id"])
            r = client.post(url, json={"wait_seconds": 0}, headers=daemon.headers)
        else:
            r = call(client, method, path, world["ids"], daemon.headers)
        # Then what only a person may do is 403 FORBIDDEN, and the rest is not refused for the role
        if (method, path) in PERSON_ONLY:
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "FORBIDDEN"
        else:
            assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)
