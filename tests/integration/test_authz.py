"""The trust boundary between tenants and between a person and a daemon (issue 12, defects 3, 4 and 5),
over the HTTP API with real tokens of two users, A and B.

- An admin token chosen by the operator (the stack's bootstrap secret, ``makima dev --admin-token``)
  that was revoked stays revoked when it is configured again; only the local start without a chosen
  token mints a new one (the deploy path: tests/integration/test_migration_resource.py, the restart:
  tests/e2e/test_local_stack.py).

- A daemon token acts for its user but may not manage tokens: listing them or revoking another token is
  403 FORBIDDEN; it may revoke itself (a host shutting down for good).
- A daemon's worktree report names tasks by id: those ids are resolved within the daemon owner's
  contracts only. Another tenant's task id (or an unknown one: the two look alike) makes the whole
  heartbeat 404 NOT_FOUND and changes nothing: no worktree row, no event, no last-seen update, the
  previous report intact.
- A supervisor is put only on a daemon of the contract's owner (start, restore: 404 for the daemon;
  claim: 409, the task is not one that daemon may take), even by an admin.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.db.connection import PooledDatabase, SingleConnectionDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.principals import Role
from makima.errors import Unauthorized
from makima.services import auth
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"


# --- defect 4: what a daemon token may do with tokens --------------------------------------------------


def test_a_daemon_token_cannot_list_its_users_tokens(
    client: TestClient, user: Caller, make_caller: Callable[..., Caller]
) -> None:
    # Given user A and a daemon token of A's
    daemon = make_caller(daemon_for=user)
    # When the daemon lists A's tokens
    r = client.get(f"{API}/users/{user.principal.user_id}/tokens", headers=daemon.headers)
    # Then it is refused for its role, and A (a person) still may
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "FORBIDDEN"
    assert client.get(f"{API}/users/{user.principal.user_id}/tokens", headers=user.headers).status_code == 200


def test_a_daemon_token_cannot_revoke_its_users_other_tokens(
    client: TestClient, user: Caller, make_caller: Callable[..., Caller]
) -> None:
    # Given user A, A's two daemon tokens, and user B
    daemon, sibling = make_caller(daemon_for=user), make_caller(daemon_for=user)
    b = make_caller()
    for victim in (user, sibling, b):
        # When the daemon revokes A's user token, the other daemon's token, or B's token
        r = client.delete(f"{API}/tokens/{victim.principal.token_id}", headers=daemon.headers)
        # Then it is 403 (the same for a token of another user: nothing is learnt about it)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "FORBIDDEN"
        # And the token still works
        assert client.get(f"{API}/contracts", headers=victim.headers).status_code == 200


def test_a_daemon_token_may_revoke_itself(client: TestClient, user: Caller, make_caller: Callable[..., Caller]) -> None:
    # Given a daemon token of A's
    daemon = make_caller(daemon_for=user)
    # When it revokes itself
    r = client.delete(f"{API}/tokens/{daemon.principal.token_id}", headers=daemon.headers)
    # Then it is revoked at once, and A's own token is untouched
    assert r.status_code == 204, r.text
    assert client.get(f"{API}/contracts", headers=daemon.headers).status_code == 401
    assert client.get(f"{API}/contracts", headers=user.headers).status_code == 200


# --- defect 5: task ids in worktree reports ------------------------------------------------------------


def _contract_with_task(client: TestClient, owner: Caller, name: str = "t") -> tuple[str, str]:
    c = client.post(f"{API}/contracts", json={"name": "c", "contract_type": "simple"}, headers=owner.headers).json()
    t = client.post(f"{API}/contracts/{c['id']}/tasks", json={"name": name}, headers=owner.headers).json()
    return str(c["id"]), str(t["id"])


def _daemon(client: TestClient, owner: Caller, name: str = "host") -> str:
    r = client.post(f"{API}/daemons", json={"name": name}, headers=owner.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _snapshot(database_url: str, daemon_id: str, contract_id: str) -> dict[str, Any]:
    """Everything a worktree report may touch: the daemon's rows, its last-seen time, and the other
    tenant's contract (its worktrees and events)."""
    with psycopg.connect(database_url) as conn:
        return {
            "daemon": conn.execute(
                "SELECT status, last_heartbeat_at FROM daemons WHERE id = %s", (daemon_id,)
            ).fetchall(),
            "worktrees": conn.execute(
                "SELECT path, branch, task_id, contract_id, state, reported_at, requested_at, removed_at"
                " FROM worktrees WHERE daemon_id = %s ORDER BY path",
                (daemon_id,),
            ).fetchall(),
            "linked": conn.execute(
                "SELECT daemon_id, path FROM worktrees WHERE contract_id = %s", (contract_id,)
            ).fetchall(),
            "events": conn.execute(
                "SELECT id FROM contract_events WHERE contract_id = %s ORDER BY id", (contract_id,)
            ).fetchall(),
        }


@pytest.mark.parametrize("reporter", ["daemon-token", "owner-token", "admin-token"])
def test_a_worktree_report_naming_another_tenants_task_is_404_and_changes_nothing(
    client: TestClient, database_url: str, make_caller: Callable[..., Caller], reporter: str
) -> None:
    # Given A's daemon holding a worktree of A's task (its previous report), and B's contract and task
    a, b = make_caller(), make_caller()
    caller = {"daemon-token": make_caller(daemon_for=a), "owner-token": a, "admin-token": make_caller(role=Role.ADMIN)}[
        reporter
    ]
    daemon_id = _daemon(client, a)
    _, own_task = _contract_with_task(client, a)
    b_contract, b_task = _contract_with_task(client, b)
    url = f"{API}/daemons/{daemon_id}/heartbeat"
    first = client.post(
        url, json={"worktrees": [{"path": "/wt/own", "branch": "own", "task_id": own_task}]}, headers=caller.headers
    )
    assert first.status_code == 200, first.text
    with psycopg.connect(database_url) as conn:  # the last report is older than the next heartbeat
        conn.execute("UPDATE daemons SET last_heartbeat_at = now() - interval '10 seconds' WHERE id = %s", (daemon_id,))
    before = _snapshot(database_url, daemon_id, b_contract)

    # When the daemon reports a worktree naming B's task (next to its own, as a full report does)
    report = {
        "worktrees": [
            {"path": "/wt/own", "branch": "own", "task_id": own_task},
            {"path": "/wt/theirs", "branch": "x", "task_id": b_task},
        ]
    }
    r = client.post(url, json=report, headers=caller.headers)

    # Then the whole heartbeat is 404 NOT_FOUND for that task, saying nothing of B's contract
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "NOT_FOUND"
    assert error["details"]["task_id"] == b_task
    assert b_contract not in r.text
    # And nothing changed: no worktree row, no link to B's contract, no event, no last-seen update
    assert _snapshot(database_url, daemon_id, b_contract) == before
    listed = client.get(f"{API}/daemons/{daemon_id}/worktrees", headers=a.headers).json()["worktrees"]
    assert [(w["path"], w["task_id"], w["state"]) for w in listed] == [("/wt/own", own_task, "active")]


def test_an_unknown_task_id_is_refused_exactly_like_another_tenants(
    client: TestClient, make_caller: Callable[..., Caller]
) -> None:
    # Given A's daemon, B's task, and a task id nobody has
    a, b = make_caller(), make_caller()
    daemon_id = _daemon(client, a)
    _, b_task = _contract_with_task(client, b)
    unknown = "00000000-0000-4000-8000-00000000beef"

    def report(task_id: str) -> Any:
        body = {"worktrees": [{"path": "/wt/x", "task_id": task_id}]}
        return client.post(f"{API}/daemons/{daemon_id}/heartbeat", json=body, headers=a.headers)

    # When it reports each
    foreign, missing = report(b_task), report(unknown)
    # Then both answers are the same but for the id: a foreign task cannot be told from a missing one
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["message"].replace(b_task, "?") == missing.json()["error"]["message"].replace(
        unknown, "?"
    )
    assert set(foreign.json()["error"]["details"]) == set(missing.json()["error"]["details"])


def _complete(client: TestClient, owner: Caller, contract_id: str, task_id: str) -> list[dict[str, Any]]:
    """Finish the contract through the completion flow; its events."""
    h, url = owner.headers, f"{API}/contracts/{contract_id}"
    client.post(f"{url}/status", json={"status": "active"}, headers=h)
    client.put(f"{url}/auto-complete", json={"enabled": True}, headers=h)
    version = client.get(url, headers=h).json()["version"]
    moved = client.post(
        f"{url}/phase", json={"phase": "execute", "expected_version": version, "force": True}, headers=h
    )
    assert moved.status_code == 200, moved.text
    client.post(f"{url}/tasks/{task_id}/status", json={"status": "completed"}, headers=h)
    for d in ("implementation", "pull-request"):
        client.post(f"{url}/deliverables", json={"deliverable_id": d}, headers=h)
    assert client.get(url, headers=h).json()["status"] == "completed"
    return list(client.get(f"{url}/events", params={"limit": 1000}, headers=h).json()["events"])


def test_another_tenants_worktree_path_never_reaches_a_contracts_event_log(
    client: TestClient, make_caller: Callable[..., Caller]
) -> None:
    # Given A's daemon that tried to attach a worktree to B's task
    a, b = make_caller(), make_caller()
    daemon_id = _daemon(client, a)
    b_contract, b_task = _contract_with_task(client, b)
    body = {"worktrees": [{"path": "/secret/a-only-path", "task_id": b_task}]}
    client.post(f"{API}/daemons/{daemon_id}/heartbeat", json=body, headers=a.headers)
    # When B's contract completes (its cleanup lists the worktrees held for it)
    events = _complete(client, b, b_contract, b_task)
    # Then B's event log knows nothing of A's path or daemon, and A's daemon is not asked about B's task
    cleanup = next(e for e in events if e["type"] == "cleanup_completed")
    assert cleanup["payload"]["worktrees"] == []
    assert "a-only-path" not in str(events)
    assert daemon_id not in str(events)
    answer = client.post(f"{API}/daemons/{daemon_id}/heartbeat", json={}, headers=a.headers).json()
    assert answer["remove_worktrees"] == []


def test_a_worktree_of_the_owners_own_task_is_linked_to_its_contract(
    client: TestClient, make_caller: Callable[..., Caller]
) -> None:
    # Given A's daemon token and A's task (the path that must keep working)
    a = make_caller()
    daemon = make_caller(daemon_for=a)
    daemon_id = _daemon(client, daemon)
    contract_id, task_id = _contract_with_task(client, a)
    # When the daemon reports a worktree of it, and one of no task
    body = {"worktrees": [{"path": "/wt/a", "task_id": task_id}, {"path": "/wt/loose"}]}
    r = client.post(f"{API}/daemons/{daemon_id}/heartbeat", json=body, headers=daemon.headers)
    # Then it is held for A's contract; the one of no task is asked back at once
    assert r.status_code == 200, r.text
    assert [w["path"] for w in r.json()["remove_worktrees"]] == ["/wt/loose"]
    listed = client.get(f"{API}/daemons/{daemon_id}/worktrees", headers=a.headers).json()["worktrees"]
    assert {w["path"]: (w["task_id"], w["contract_id"]) for w in listed} == {
        "/wt/a": (task_id, contract_id),
        "/wt/loose": (None, None),
    }


# --- other ids a caller passes: daemons of another owner --------------------------------------------------


def test_an_admin_cannot_put_a_supervisor_on_another_owners_daemon(
    client: TestClient, make_caller: Callable[..., Caller]
) -> None:
    # Given B's daemon and A's contract, and an admin (who sees both)
    a, b, admin = make_caller(), make_caller(), make_caller(role=Role.ADMIN)
    b_daemon = _daemon(client, b)
    contract_id, _ = _contract_with_task(client, a)
    # When the admin starts A's supervisor on B's daemon
    r = client.post(f"{API}/contracts/{contract_id}/supervisor", json={"daemon_id": b_daemon}, headers=admin.headers)
    # Then that daemon is not found for A's contract, and no supervisor is started
    assert r.status_code == 404, r.text
    assert r.json()["error"]["details"] == {"daemon_id": b_daemon}
    assert client.get(f"{API}/contracts/{contract_id}/supervisor/status", headers=a.headers).status_code == 404


def test_an_admin_cannot_restore_or_move_a_supervisor_onto_another_owners_daemon(
    client: TestClient, db: PooledDatabase, database_url: str, make_caller: Callable[..., Caller]
) -> None:
    # Given A's supervisor on A's daemon, which died, and B's live daemon
    a, b, admin = make_caller(), make_caller(), make_caller(role=Role.ADMIN)
    a_daemon, b_daemon = _daemon(client, a, "a-host"), _daemon(client, b, "b-host")
    contract_id, _ = _contract_with_task(client, a)
    started = client.post(f"{API}/contracts/{contract_id}/supervisor", json={"daemon_id": a_daemon}, headers=a.headers)
    assert started.status_code == 201, started.text
    task_id = started.json()["supervisor"]["task_id"]
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE daemons SET last_heartbeat_at = now() - interval '1 hour' WHERE id = %s", (a_daemon,))
    supervisors_svc.detect_dead_supervisors(db, timedelta(seconds=120))
    assert task_id in [t["id"] for t in client.get(f"{API}/tasks/reassignable", headers=a.headers).json()["tasks"]]
    # When an admin restores it on B's daemon, or claims its task for B's daemon
    restored = client.post(
        f"{API}/contracts/{contract_id}/supervisor/restore", json={"daemon_id": b_daemon}, headers=admin.headers
    )
    claimed = client.post(f"{API}/tasks/{task_id}/claim", json={"daemon_id": b_daemon}, headers=admin.headers)
    # Then the restore is 404 for that daemon, the claim finds no task B's daemon could take (as for a
    # task of no one), and the supervisor stays where it was
    assert (restored.status_code, restored.json()["error"]["details"]) == (404, {"daemon_id": b_daemon}), restored.text
    assert (claimed.status_code, claimed.json()["error"]["code"]) == (409, "CONFLICT"), claimed.text
    status = client.get(f"{API}/contracts/{contract_id}/supervisor/status", headers=a.headers).json()
    assert status["daemon_id"] == a_daemon
    task = client.get(f"{API}/contracts/{contract_id}/tasks/{task_id}", headers=a.headers).json()
    assert task["daemon_id"] == a_daemon


# --- defect 3: a revoked bootstrap (or --admin-token) token ------------------------------------------------


def test_a_revoked_admin_token_is_never_registered_again_and_only_the_local_start_mints_another(
    fresh_database: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a new database whose chosen admin token was registered, then revoked (the only admin token)
    url = fresh_database("makima_authz")
    migrate(url)
    database = SingleConnectionDatabase(url)
    chosen = f"mkm_chosen_{uuid.uuid4().hex}"
    try:
        with transaction(database) as conn:
            assert auth.register_admin_token(conn, token=chosen) is auth.AdminTokenOutcome.REGISTERED
            assert auth.register_admin_token(conn, token=chosen) is auth.AdminTokenOutcome.KNOWN
        admin = auth.resolve(database, chosen)
        assert admin.token_id is not None
        auth.revoke_token(database, admin, admin.token_id)

        # When it is configured again (a deploy, or a restart with the same --admin-token)
        with caplog.at_level(logging.WARNING, logger="makima.auth"), transaction(database) as conn:
            outcome = auth.register_admin_token(conn, token=chosen)
            again = auth.ensure_admin(conn, token=chosen)
        # Then it stays revoked, nothing is registered or minted, and two warnings say so by token id
        assert outcome is auth.AdminTokenOutcome.REVOKED
        assert again is None
        with pytest.raises(Unauthorized):
            auth.resolve(database, chosen)
        messages = [r.getMessage() for r in caplog.records if r.name == "makima.auth"]
        assert any(str(admin.token_id) in m and "stays revoked" in m for m in messages), messages
        assert any("no live admin token is left" in m for m in messages), messages
        assert chosen not in caplog.text

        # And only a start without a chosen token (the local stack, which prints it once) mints a new
        # admin token, because none is live; a second such start mints none
        with transaction(database) as conn:
            minted = auth.ensure_admin(conn)
            assert auth.ensure_admin(conn) is None
        assert minted is not None
        assert minted != chosen
        assert auth.resolve(database, minted).role is Role.ADMIN
    finally:
        database.close()
