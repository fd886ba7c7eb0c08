"""Seed 5.3: POST /contracts/batch against the real database: the five contract operations, dry runs,
partial failure, contracts that change while the batch runs, chunking, admin-only access and bad input;
and ``cleanup_worktrees``, the sixth, over the orphaned worktrees daemons hold.

The test database is shared by the whole session, so every batch here names its contracts
(``contract_ids``); the one unrestricted batch runs on a database of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from makima.api.app import create_app
from makima.config import FeatureFlagsConfig, Settings
from makima.db import batch as batch_sql
from makima.db.connection import Conn, PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.principals import Role
from makima.errors import Conflict
from makima.services import auth
from makima.services import batch as batch_svc
from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"
BATCH = f"{API}/contracts/batch"
STALE = timedelta(minutes=30)  # the configured default


# --- helpers --------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """Contracts in the states a batch selects, made through the API (so their events are real), and
    aged by moving their timestamps back."""

    client: TestClient
    database_url: str

    def contract(self, owner: Caller, *path: str, name: str = "c") -> str:
        """A new contract of ``owner`` moved through the statuses ``path`` (e.g. "active", "completed")."""
        r = self.client.post(f"{API}/contracts", json={"name": name}, headers=owner.headers)
        assert r.status_code == 201, r.text
        cid = str(r.json()["id"])
        for status in path:
            moved = self.client.post(f"{API}/contracts/{cid}/status", json={"status": status}, headers=owner.headers)
            assert moved.status_code == 200, moved.text
        return cid

    def supervised(self, owner: Caller) -> str:
        """A new contract with a supervisor started on a daemon of ``owner`` (the contract is active)."""
        cid = self.contract(owner, name="supervised")
        daemon = self.client.post(f"{API}/daemons", json={"name": f"h-{uuid.uuid4().hex[:8]}"}, headers=owner.headers)
        r = self.client.post(
            f"{API}/contracts/{cid}/supervisor", json={"daemon_id": daemon.json()["id"]}, headers=owner.headers
        )
        assert r.status_code == 201, r.text
        return cid

    def age(self, *ids: str, hours: float) -> None:
        """Pretend the contracts' last status change and last activity were ``hours`` ago."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                """
                UPDATE contracts SET status_changed_at = now() - make_interval(secs => %(s)s),
                                     last_activity_at = now() - make_interval(secs => %(s)s)
                 WHERE id = ANY(%(ids)s::uuid[])
                """,
                {"s": hours * 3600, "ids": list(ids)},
            )

    def row(self, cid: str) -> dict[str, Any] | None:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return conn.execute("SELECT status, version FROM contracts WHERE id = %s", (cid,)).fetchone()

    def status(self, cid: str) -> str | None:
        r = self.row(cid)
        return None if r is None else str(r["status"])

    def events(self, cid: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT type, actor, owner_id, payload FROM contract_events WHERE contract_id = %s ORDER BY id", (cid,)
            ).fetchall()

    def last_event_id(self) -> int:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            row = conn.execute("SELECT coalesce(max(id), 0) AS id FROM contract_events").fetchone()
            assert row is not None
            return int(row["id"])

    def summaries_since(self, event_id: int) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return conn.execute(
                """
                SELECT contract_id, owner_id, actor, payload FROM contract_events
                 WHERE type = 'batch_operation' AND id > %s ORDER BY id
                """,
                (event_id,),
            ).fetchall()


@pytest.fixture
def setup(client: TestClient, database_url: str) -> Setup:
    return Setup(client, database_url)


@pytest.fixture
def boss(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller(role=Role.ADMIN)


def run(client: TestClient, caller: Caller, expect: int = 200, **body: Any) -> dict[str, Any]:
    r = client.post(BATCH, json=body, headers=caller.headers)
    assert r.status_code == expect, r.text
    return dict(r.json())


def affected(answer: dict[str, Any]) -> set[str]:
    assert answer["affected_count"] == len(answer["affected_ids"])
    return set(answer["affected_ids"])


# --- the five operations --------------------------------------------------------------------------------


def test_archive_old_archives_finished_contracts_of_every_owner(
    client: TestClient, setup: Setup, boss: Caller, make_caller: Callable[..., Caller]
) -> None:
    # Given two owners' finished contracts, old and recent, and an old one still at work
    a, b = make_caller(), make_caller()
    old_done = setup.contract(a, "active", "completed")
    old_failed = setup.contract(b, "active", "failed")
    recent_done = setup.contract(a, "active", "completed")
    old_active = setup.contract(a, "active")
    setup.age(old_done, old_failed, old_active, hours=200)
    ids = [old_done, old_failed, recent_done, old_active]
    since = setup.last_event_id()

    # When an admin archives the failed ones older than a week, then all finished ones older than a week
    failed_only = run(
        client, boss, operation="archive_old", older_than_hours=168, status_filter=["failed"], contract_ids=ids
    )
    both = run(client, boss, operation="archive_old", older_than_hours=168, contract_ids=ids)

    # Then each run archived what matched it, whoever owns it, and left the rest alone
    assert affected(failed_only) == {old_failed}
    assert affected(both) == {old_done}  # the failed one is archived already: no longer a candidate
    assert (both["operation"], both["dry_run"], both["errors"]) == ("archive_old", False, [])
    # And the answer names what it archived, as it found it (before the change)
    (shown,) = both["affected_contracts"]
    assert (shown["id"], shown["name"], shown["owner_id"], shown["status"]) == (
        old_done,
        "c",
        str(a.principal.user_id),
        "completed",
    )
    assert both["affected_worktrees"] == []
    assert [setup.status(c) for c in ids] == ["archived", "archived", "completed", "active"]
    # And each archived contract has its status_changed event, by the admin, as POST …/status writes it
    last = setup.events(old_done)[-1]
    assert last["type"] == "status_changed"
    assert last["actor"] == f"admin:{boss.principal.user_id}"
    assert str(last["owner_id"]) == str(a.principal.user_id)
    assert last["payload"] == {
        "contract_id": old_done,
        "old_status": "completed",
        "new_status": "archived",
        "reason": "batch archive_old",
    }
    # And each run recorded one summary event
    assert [s["payload"] for s in setup.summaries_since(since)] == [
        {"operation": "archive_old", "affected_count": 1, "error_count": 0, "dry_run": False},
        {"operation": "archive_old", "affected_count": 1, "error_count": 0, "dry_run": False},
    ]


def test_pause_all_then_resume_all(
    client: TestClient, setup: Setup, boss: Caller, make_caller: Callable[..., Caller]
) -> None:
    # Given active contracts of two owners, a created one and a waiting one
    a, b = make_caller(), make_caller()
    one, two = setup.contract(a, "active"), setup.contract(b, "active")
    fresh, waiting = setup.contract(a), setup.contract(a, "active")
    client.post(f"{API}/contracts/{waiting}/questions", json={"question": "?"}, headers=a.headers)
    ids = [one, two, fresh, waiting]
    since = setup.last_event_id()

    # When an admin pauses all of them, with a reason
    paused = run(client, boss, operation="pause_all", reason="maintenance window", contract_ids=ids)

    # Then exactly the active ones are paused, each with its status_changed event carrying the reason
    assert affected(paused) == {one, two}
    assert [setup.status(c) for c in ids] == ["paused", "paused", "created", "waiting_for_input"]
    for cid in (one, two):
        event = setup.events(cid)[-1]
        assert (event["type"], event["payload"]["old_status"], event["payload"]["new_status"]) == (
            "status_changed",
            "active",
            "paused",
        )
        assert event["payload"]["reason"] == "maintenance window"
    # And work on a paused contract is refused as usual
    assert client.post(f"{API}/contracts/{one}/tasks", json={"name": "t"}, headers=a.headers).status_code == 400

    # When an admin resumes all of them
    resumed = run(client, boss, operation="resume_all", contract_ids=ids)

    # Then the paused ones are active again, and each run left one summary event
    assert affected(resumed) == {one, two}
    assert [setup.status(c) for c in ids] == ["active", "active", "created", "waiting_for_input"]
    summaries = setup.summaries_since(since)
    assert [s["payload"] for s in summaries] == [
        {"operation": "pause_all", "affected_count": 2, "error_count": 0, "dry_run": False},
        {"operation": "resume_all", "affected_count": 2, "error_count": 0, "dry_run": False},
    ]
    assert all((s["contract_id"], s["owner_id"]) == (None, None) for s in summaries)
    assert all(s["actor"] == f"admin:{boss.principal.user_id}" for s in summaries)


def test_cleanup_archived_deletes_old_archived_contracts_and_keeps_their_record(
    client: TestClient, setup: Setup, boss: Caller, user: Caller, database_url: str
) -> None:
    # Given an old archived contract with a task, a question and a message; a recent archived one; an old
    # completed one
    old = setup.contract(user, "active")
    h = user.headers
    client.post(f"{API}/contracts/{old}/tasks", json={"name": "t"}, headers=h)
    client.post(f"{API}/contracts/{old}/messages", json={"content": "hi"}, headers=h)
    client.post(f"{API}/contracts/{old}/status", json={"status": "completed"}, headers=h)
    client.post(f"{API}/contracts/{old}/status", json={"status": "archived"}, headers=h)
    recent = setup.contract(user, "active", "completed", "archived")
    done = setup.contract(user, "active", "completed")
    setup.age(old, done, hours=48)
    history = setup.events(old)

    # When an admin cleans up archived contracts older than a day
    answer = run(client, boss, operation="cleanup_archived", older_than_hours=24, contract_ids=[old, recent, done])

    # Then only the old archived contract is gone, with everything it held
    assert affected(answer) == {old}
    assert [setup.status(c) for c in (old, recent, done)] == [None, "archived", "completed"]
    assert client.get(f"{API}/contracts/{old}", headers=h).status_code == 404
    with psycopg.connect(database_url) as conn:
        for table in ("tasks", "chat_messages", "completed_deliverables"):
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE contract_id = %s", (old,)).fetchone()
            assert row == (0,), table
    # And its events outlive it, the last one saying it was deleted and by whom
    events = setup.events(old)
    assert events[: len(history)] == history
    assert events[-1]["type"] == "contract_deleted"
    assert events[-1]["actor"] == f"admin:{boss.principal.user_id}"
    assert events[-1]["payload"] == {
        "contract_id": old,
        "name": "c",
        "contract_type": "simple",
        "status": "archived",
        "reason": "batch cleanup_archived",
    }


def test_restart_stale_restarts_supervisors_and_reports_contracts_without_one(
    client: TestClient, setup: Setup, boss: Caller, user: Caller
) -> None:
    # Given stale contracts with and without a supervisor, a fresh supervised one and an old finished one
    stale_sup, stale_bare = setup.supervised(user), setup.contract(user, "active")
    fresh_sup, old_done = setup.supervised(user), setup.contract(user, "active", "completed")
    setup.age(stale_sup, stale_bare, old_done, hours=2)
    since = setup.last_event_id()

    # When an admin restarts the stale ones (the configured threshold: 30 minutes)
    answer = run(client, boss, operation="restart_stale", contract_ids=[stale_sup, stale_bare, fresh_sup, old_done])

    # Then the stale supervisor is asked to restart, and the stale contract without one is an error
    assert affected(answer) == {stale_sup}
    assert answer["errors"] == [
        {
            "contract_id": stale_bare,
            "code": "SUPERVISOR_NOT_FOUND",
            "message": f"contract {stale_bare} has no supervisor",
        }
    ]
    status = client.get(f"{API}/contracts/{stale_sup}/supervisor/status", headers=user.headers).json()
    assert status["restart_requested"] is True
    fresh = client.get(f"{API}/contracts/{fresh_sup}/supervisor/status", headers=user.headers).json()
    assert fresh["restart_requested"] is False
    event = setup.events(stale_sup)[-1]
    assert (event["type"], event["payload"]["reason"], event["payload"]["dead"]) == (
        "supervisor_restart_requested",
        "batch restart_stale",
        False,
    )
    # And the summary counts the error; the failed item wrote nothing
    assert [e["type"] for e in setup.events(stale_bare)][-1] == "status_changed"
    assert [s["payload"] for s in setup.summaries_since(since)] == [
        {"operation": "restart_stale", "affected_count": 1, "error_count": 1, "dry_run": False}
    ]

    # When the threshold is given, longer than the contracts have been idle
    longer = run(client, boss, operation="restart_stale", older_than_hours=3, contract_ids=[stale_sup, stale_bare])

    # Then nothing is stale
    assert (longer["affected_count"], longer["errors"]) == (0, [])


# --- dry runs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "path", "extra"),
    [
        ("archive_old", ("active", "completed"), {"older_than_hours": 1}),
        ("pause_all", ("active",), {}),
        ("resume_all", ("active", "paused"), {}),
        ("cleanup_archived", ("active", "completed", "archived"), {"older_than_hours": 1}),
        ("restart_stale", ("active",), {"older_than_hours": 1}),
    ],
)
def test_dry_run_lists_and_writes_nothing(
    client: TestClient, setup: Setup, boss: Caller, user: Caller, operation: str, path: tuple[str, ...], extra: Any
) -> None:
    # Given a contract the operation would act on (and, for restarts, one with a supervisor)
    target = setup.contract(user, *path)
    ids = [target]
    if operation == "restart_stale":
        ids.append(setup.supervised(user))
    setup.age(*ids, hours=2)
    before = [(setup.row(c), setup.events(c)) for c in ids]
    since = setup.last_event_id()

    # When an admin runs it as a dry run
    answer = run(client, boss, operation=operation, dry_run=True, contract_ids=ids, **extra)

    # Then the answer says what would happen
    assert answer["dry_run"] is True
    if operation == "restart_stale":
        assert affected(answer) == {ids[1]}
        assert [(e["contract_id"], e["code"]) for e in answer["errors"]] == [(target, "SUPERVISOR_NOT_FOUND")]
    else:
        assert (affected(answer), answer["errors"]) == ({target}, [])
    # And nothing was written: no change, no event, no summary
    assert [(setup.row(c), setup.events(c)) for c in ids] == before
    assert setup.last_event_id() == since


# --- partial failure and concurrent changes -------------------------------------------------------------


def test_a_contract_that_changed_since_it_was_listed_is_skipped(
    client: TestClient,
    setup: Setup,
    boss: Caller,
    user: Caller,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given three active contracts, one of which is completed by someone else right after the batch lists it
    ids = sorted([setup.contract(user, "active") for _ in range(3)])
    changed = ids[1]
    listed = batch_sql.candidates

    def list_then_change(conn: Conn, selection: batch_sql.Selection, **kw: Any) -> list[dict[str, Any]]:
        rows = listed(conn, selection, **kw)
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("UPDATE contracts SET status = 'completed' WHERE id = %s", (changed,))
        return rows

    monkeypatch.setattr(batch_sql, "candidates", list_then_change)

    # When an admin pauses all three
    answer = run(client, boss, operation="pause_all", contract_ids=ids)

    # Then the changed one is re-checked under its lock and skipped: neither affected nor an error
    assert affected(answer) == {ids[0], ids[2]}
    assert answer["errors"] == []
    assert [setup.status(c) for c in ids] == ["paused", "completed", "paused"]


def test_an_item_that_fails_after_writing_is_undone_alone(
    client: TestClient, setup: Setup, boss: Caller, user: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three active contracts, and a pause that fails on the second after it has written its change
    ids = sorted(setup.contract(user, "active") for _ in range(3))
    pause = batch_svc.ACTIONS[batch_svc.BatchOperation.PAUSE_ALL]

    def pause_then_fail(conn: Conn, principal: Any, contract_id: uuid.UUID, reason: str, policy: Any) -> None:
        pause(conn, principal, contract_id, reason, policy)
        if str(contract_id) == ids[1]:
            raise Conflict("failed after writing", {"contract_id": str(contract_id)})

    monkeypatch.setitem(batch_svc.ACTIONS, batch_svc.BatchOperation.PAUSE_ALL, pause_then_fail)
    before = setup.events(ids[1])

    # When an admin pauses all three
    answer = run(client, boss, operation="pause_all", contract_ids=ids)

    # Then the failed item's change and event are rolled back with its savepoint; the others are committed
    assert affected(answer) == {ids[0], ids[2]}
    assert answer["errors"] == [{"contract_id": ids[1], "code": "CONFLICT", "message": "failed after writing"}]
    assert [setup.status(c) for c in ids] == ["paused", "active", "paused"]
    assert setup.events(ids[1]) == before


def _lock_refusals(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once the batch was refused a row lock (``NOWAIT``) and pauses to try again (``db/batch.py:
    locked``). (Watching ``pg_stat_activity`` for the ``NOWAIT`` statement missed it now and then: it
    runs for microseconds between the pauses.)"""
    refused = threading.Event()

    def pause(seconds: float) -> None:
        refused.set()
        time.sleep(seconds)

    monkeypatch.setattr(batch_sql, "time", SimpleNamespace(monotonic=time.monotonic, sleep=pause))
    return refused


def test_a_contract_changed_while_the_batch_waits_for_it_is_rechecked(
    db: PooledDatabase, setup: Setup, boss: Caller, user: Caller, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two active contracts, one being completed by a transaction that has not committed yet
    monkeypatch.setattr(batch_svc, "LOCK_TIMEOUT", timedelta(seconds=30))
    refused = _lock_refusals(monkeypatch)
    ids = sorted([setup.contract(user, "active") for _ in range(2)])
    results: list[batch_svc.BatchResult] = []
    with psycopg.connect(database_url) as other:
        other.execute("UPDATE contracts SET status = 'completed', status_changed_at = now() WHERE id = %s", (ids[0],))
        request = batch_svc.BatchRequest(operation="pause_all", contract_ids=[uuid.UUID(c) for c in ids])
        batch = threading.Thread(
            target=lambda: results.append(batch_svc.run_batch(db, boss.principal, request, stale_threshold=STALE))
        )

        # When the batch reaches that contract, and the other transaction then commits
        batch.start()
        assert refused.wait(timeout=30), "the batch never met the lock"
        other.commit()
    batch.join(timeout=30)

    # Then the batch saw the committed change under its lock: skipped, and the other contract paused
    (result,) = results
    assert (result.affected_ids, result.errors) == ([uuid.UUID(ids[1])], [])
    assert [setup.status(c) for c in ids] == ["completed", "paused"]


def test_a_contract_held_by_another_change_is_an_error_and_the_rest_is_done(
    client: TestClient, setup: Setup, boss: Caller, user: Caller, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three active contracts, the middle one locked by a long transaction
    monkeypatch.setattr(batch_svc, "LOCK_TIMEOUT", timedelta(milliseconds=200))
    ids = sorted([setup.contract(user, "active") for _ in range(3)])
    since = setup.last_event_id()
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM contracts WHERE id = %s FOR UPDATE", (ids[1],))

        # When an admin pauses all three
        answer = run(client, boss, operation="pause_all", contract_ids=ids)
        other.rollback()

    # Then the held one is a CONFLICT error, untouched, and the two others are paused and committed
    assert affected(answer) == {ids[0], ids[2]}
    assert [(e["contract_id"], e["code"]) for e in answer["errors"]] == [(ids[1], "CONFLICT")]
    assert [setup.status(c) for c in ids] == ["paused", "active", "paused"]
    assert [e["type"] for e in setup.events(ids[1])][-1] == "status_changed"  # its activation, nothing after
    assert setup.events(ids[1])[-1]["payload"]["new_status"] == "active"
    assert [s["payload"]["error_count"] for s in setup.summaries_since(since)] == [1]


# --- chunks and limits ----------------------------------------------------------------------------------


def test_more_contracts_than_a_chunk_are_all_processed_one_transaction_per_chunk(
    client: TestClient, setup: Setup, boss: Caller, user: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five active contracts and chunks of two
    monkeypatch.setattr(batch_svc, "CHUNK_SIZE", 2)
    ids = [setup.contract(user, "active") for _ in range(5)]
    transactions: list[int] = []
    listed = batch_sql.candidates

    def spy(conn: Conn, selection: batch_sql.Selection, **kw: Any) -> list[dict[str, Any]]:
        row = conn.execute("SELECT txid_current() AS txid").fetchone()
        assert row is not None
        transactions.append(int(row["txid"]))
        return listed(conn, selection, **kw)

    monkeypatch.setattr(batch_sql, "candidates", spy)

    # When an admin pauses them all
    answer = run(client, boss, operation="pause_all", contract_ids=ids)

    # Then every one is paused, over three transactions (2 + 2 + 1), in id order
    assert answer["affected_ids"] == sorted(ids)
    assert all(setup.status(c) == "paused" for c in ids)
    assert len(transactions) == len(set(transactions)) == 3


def test_limit_caps_a_batch_and_a_rerun_continues(
    client: TestClient, setup: Setup, boss: Caller, user: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five active contracts and chunks of two
    monkeypatch.setattr(batch_svc, "CHUNK_SIZE", 2)
    ids = sorted(setup.contract(user, "active") for _ in range(5))

    # When an admin pauses them with a limit of three, twice
    first = run(client, boss, operation="pause_all", contract_ids=ids, limit=3)
    second = run(client, boss, operation="pause_all", contract_ids=ids, limit=3)

    # Then the first run did three, the second the two left
    assert first["affected_ids"] == ids[:3]
    assert second["affected_ids"] == ids[3:]


def test_an_unrestricted_batch_acts_on_every_owner(fresh_database: Callable[[str], str]) -> None:
    # Given a database of its own with two users' active contracts, one created contract, and an admin
    url = fresh_database("makima_batch")
    migrate(url)
    own = PooledDatabase(url, min_size=1, max_size=4)
    try:
        with transaction(own) as conn:
            secret = auth.ensure_admin(conn, name="batch-admin", token=f"mkm_admin_{uuid.uuid4().hex}")
        assert secret is not None
        admin = Caller(auth.resolve(own, secret), secret)
        with TestClient(create_app(own), raise_server_exceptions=False) as c:
            setup = Setup(c, url)
            people = []
            for name in ("ann", "bob"):
                user = auth.create_user(own, admin.principal, name=name, role=Role.USER)
                issued = auth.issue_token(own, admin.principal, user.id, name="t", kind="user")
                people.append(Caller(auth.resolve(own, issued.secret), issued.secret))
            active = [setup.contract(p, "active") for p in people]
            created = setup.contract(people[0])

            # When the admin pauses all, without naming contracts (first as a dry run)
            preview = run(c, admin, operation="pause_all", dry_run=True)
            answer = run(c, admin, operation="pause_all")

            # Then every owner's active contracts are paused, and nothing else
            assert affected(preview) == affected(answer) == set(active)
            assert [setup.status(x) for x in [*active, created]] == ["paused", "paused", "created"]
    finally:
        own.close()


# --- who may, and what is refused -----------------------------------------------------------------------


def test_only_admins_may_run_batches(
    client: TestClient, setup: Setup, user: Caller, make_caller: Callable[..., Caller]
) -> None:
    # Given a user's active contract, the user and the user's daemon
    cid = setup.contract(user, "active")
    daemon = make_caller(daemon_for=user)
    since = setup.last_event_id()

    for caller in (user, daemon):
        # When they try to pause it in a batch
        r = client.post(BATCH, json={"operation": "pause_all", "contract_ids": [cid]}, headers=caller.headers)

        # Then it is refused as every admin-only operation is, and nothing happened
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert setup.status(cid) == "active"
    assert setup.last_event_id() == since


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"operation": "explode"}, 400, "VALIDATION_FAILED"),
        ({"operation": "archive_old"}, 400, "VALIDATION_FAILED"),
        ({"operation": "cleanup_archived"}, 400, "VALIDATION_FAILED"),
        ({"operation": "archive_old", "older_than_hours": 1, "status_filter": ["active"]}, 400, "VALIDATION_FAILED"),
        ({"operation": "archive_old", "older_than_hours": 1, "status_filter": ["archived"]}, 400, "VALIDATION_FAILED"),
        ({"operation": "archive_old", "older_than_hours": 1, "status_filter": ["nope"]}, 400, "VALIDATION_FAILED"),
        ({"operation": "archive_old", "older_than_hours": 1, "status_filter": []}, 400, "VALIDATION_FAILED"),
        ({"operation": "pause_all", "older_than_hours": 24}, 400, "VALIDATION_FAILED"),
        ({"operation": "resume_all", "status_filter": ["failed"]}, 400, "VALIDATION_FAILED"),
        ({"operation": "archive_old", "older_than_hours": -1}, 422, "INVALID_REQUEST"),
        ({"operation": "archive_old", "older_than_hours": 10**12}, 422, "INVALID_REQUEST"),
        ({"operation": "pause_all", "limit": 0}, 422, "INVALID_REQUEST"),
        ({"operation": "pause_all", "limit": batch_svc.MAX_LIMIT + 1}, 422, "INVALID_REQUEST"),
        ({"operation": "pause_all", "contract_ids": ["not-a-uuid"]}, 422, "INVALID_REQUEST"),
        ({"operation": "pause_all", "reason": "a\u0000b"}, 422, "INVALID_REQUEST"),
        ({"operation": "pause_all", "everything": True}, 422, "INVALID_REQUEST"),
        ({"older_than_hours": 1}, 422, "INVALID_REQUEST"),
        (
            {"operation": "pause_all", "worktrees": [{"daemon_id": str(uuid.uuid4()), "path": "/w"}]},
            400,
            "VALIDATION_FAILED",
        ),
        ({"operation": "cleanup_worktrees", "status_filter": ["completed"]}, 400, "VALIDATION_FAILED"),
        (
            {"operation": "cleanup_worktrees", "worktrees": [{"daemon_id": "nope", "path": "/w"}]},
            422,
            "INVALID_REQUEST",
        ),
        (
            {"operation": "cleanup_worktrees", "worktrees": [{"daemon_id": str(uuid.uuid4()), "path": ""}]},
            422,
            "INVALID_REQUEST",
        ),
        ({"operation": "cleanup_worktrees", "worktrees": [{"path": "/w"}]}, 422, "INVALID_REQUEST"),
        ({"operation": "archive_old", "older_than_hours": "soon"}, 422, "INVALID_REQUEST"),
    ],
)
def test_bad_input_is_refused_and_nothing_runs(
    client: TestClient, setup: Setup, boss: Caller, body: dict[str, Any], status: int, code: str
) -> None:
    since = setup.last_event_id()
    r = client.post(BATCH, json=body, headers=boss.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert setup.last_event_id() == since


def test_validation_names_what_is_valid(client: TestClient, boss: Caller) -> None:
    unknown = client.post(BATCH, json={"operation": "explode"}, headers=boss.headers).json()["error"]
    assert unknown["details"]["valid_operations"] == [
        "archive_old",
        "pause_all",
        "resume_all",
        "cleanup_archived",
        "restart_stale",
        "cleanup_worktrees",
    ]
    body = {"operation": "archive_old", "older_than_hours": 1, "status_filter": ["completed", "active"]}
    refused = client.post(BATCH, json=body, headers=boss.headers).json()["error"]
    assert refused["details"]["valid_statuses"] == ["completed", "failed"]
    assert "'active'" in refused["message"]


def test_pause_all_follows_the_enhanced_status_flag(
    db: PooledDatabase, setup: Setup, boss: Caller, user: Caller
) -> None:
    # Given the enhanced statuses switched off (paused is one of them)
    cid = setup.contract(user, "active")
    settings = Settings(feature_flags=FeatureFlagsConfig(enhanced_contract_status=False))
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as off:
        # When an admin pauses all, and archives
        paused = off.post(BATCH, json={"operation": "pause_all", "contract_ids": [cid]}, headers=boss.headers)
        archived = off.post(
            BATCH,
            json={"operation": "archive_old", "older_than_hours": 0, "contract_ids": [cid]},
            headers=boss.headers,
        )

    # Then pausing is the disabled feature, archiving (a legacy status) still works
    assert (paused.status_code, paused.json()["error"]["code"]) == (404, "FEATURE_DISABLED")
    assert archived.status_code == 200, archived.text
    assert setup.status(cid) == "active"


def test_older_than_hours_takes_fractions(client: TestClient, setup: Setup, boss: Caller, user: Caller) -> None:
    # Given a contract finished an hour ago and one finished ten minutes ago
    hour, minutes = setup.contract(user, "active", "completed"), setup.contract(user, "active", "completed")
    setup.age(hour, hours=1)
    setup.age(minutes, hours=1 / 6)

    # When an admin archives those finished more than half an hour ago
    answer = run(client, boss, operation="archive_old", older_than_hours=0.5, contract_ids=[hour, minutes])

    # Then only the one finished an hour ago is archived
    assert affected(answer) == {hour}
    assert [setup.status(c) for c in (hour, minutes)] == ["archived", "completed"]


# --- cleanup_worktrees ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    """A daemon of ``owner`` holding worktrees, reported through its heartbeat as a daemon does."""

    client: TestClient
    setup: Setup
    owner: Caller
    daemon_id: str = ""

    def __post_init__(self) -> None:
        r = self.client.post(f"{API}/daemons", json={"name": f"h-{uuid.uuid4().hex[:8]}"}, headers=self.owner.headers)
        assert r.status_code == 201, r.text
        self.daemon_id = str(r.json()["id"])

    def task(self, cid: str, name: str = "t") -> str:
        r = self.client.post(f"{API}/contracts/{cid}/tasks", json={"name": name}, headers=self.owner.headers)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def finish(self, cid: str, task_id: str) -> None:
        r = self.client.post(
            f"{API}/contracts/{cid}/tasks/{task_id}/status", json={"status": "completed"}, headers=self.owner.headers
        )
        assert r.status_code == 200, r.text

    def heartbeat(self, worktrees: list[dict[str, Any]] | None = None) -> list[str]:
        """Heartbeat (reporting ``worktrees`` if given); the paths the answer asks the daemon to remove."""
        body = {} if worktrees is None else {"worktrees": worktrees}
        r = self.client.post(f"{API}/daemons/{self.daemon_id}/heartbeat", json=body, headers=self.owner.headers)
        assert r.status_code == 200, r.text
        return sorted(w["path"] for w in r.json()["remove_worktrees"])

    def states(self) -> dict[str, str]:
        r = self.client.get(f"{API}/daemons/{self.daemon_id}/worktrees", headers=self.owner.headers)
        assert r.status_code == 200, r.text
        return {w["path"]: w["state"] for w in r.json()["worktrees"]}

    def key(self, path: str) -> dict[str, str]:
        return {"daemon_id": self.daemon_id, "path": path}

    def age_task(self, task_id: str, hours: float) -> None:
        with psycopg.connect(self.setup.database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE tasks SET finished_at = now() - make_interval(secs => %s) WHERE id = %s",
                (hours * 3600, task_id),
            )


@pytest.fixture
def fleet(client: TestClient, setup: Setup, user: Caller) -> Fleet:
    return Fleet(client, setup, user)


def _orphans(client: TestClient, setup: Setup, fleet: Fleet, boss: Caller) -> dict[str, str]:
    """Worktrees in every situation: path -> its contract (or "" once deleted). The task-finished one,
    the failed contract's and the deleted contract's finished two days ago; the rest is recent or live."""
    c_task, c_failed, c_recent, c_live, c_deleted = (setup.contract(fleet.owner, "active") for _ in range(5))
    tasks = {c: fleet.task(c) for c in (c_task, c_failed, c_recent, c_live, c_deleted)}
    paths = {"/w/task-done": c_task, "/w/failed": c_failed, "/w/recent": c_recent, "/w/live": c_live}
    paths["/w/deleted"] = c_deleted
    assert fleet.heartbeat([{"path": p, "branch": f"b{p}", "task_id": tasks[c]} for p, c in paths.items()]) == []
    fleet.finish(c_task, tasks[c_task])
    fleet.finish(c_recent, tasks[c_recent])
    fleet.age_task(tasks[c_task], hours=48)
    client.post(f"{API}/contracts/{c_failed}/status", json={"status": "failed"}, headers=fleet.owner.headers)
    for status in ("completed", "archived"):
        client.post(f"{API}/contracts/{c_deleted}/status", json={"status": status}, headers=fleet.owner.headers)
    setup.age(c_failed, c_deleted, hours=48)
    deleted = run(client, boss, operation="cleanup_archived", older_than_hours=24, contract_ids=[c_deleted])
    assert affected(deleted) == {c_deleted}
    paths["/w/deleted"] = ""
    return paths


def test_cleanup_worktrees_marks_orphaned_worktrees_and_their_daemon_is_told(
    client: TestClient, setup: Setup, boss: Caller, fleet: Fleet
) -> None:
    # Given a daemon's worktrees: three orphaned for two days (task finished, contract failed, contract
    # deleted), one whose task finished just now, one still at work
    paths = _orphans(client, setup, fleet, boss)
    keys = [fleet.key(p) for p in paths]
    old = {"/w/task-done", "/w/failed", "/w/deleted"}
    since = setup.last_event_id()

    # When an admin looks first (a dry run), then cleans up worktrees orphaned for more than a day
    preview = run(client, boss, operation="cleanup_worktrees", older_than_hours=24, worktrees=keys, dry_run=True)
    states_after_preview = fleet.states()
    answer = run(client, boss, operation="cleanup_worktrees", older_than_hours=24, worktrees=keys)

    # Then the dry run listed the three and changed nothing
    assert {w["path"] for w in preview["affected_worktrees"]} == old
    assert (preview["affected_count"], preview["affected_ids"], preview["errors"]) == (3, [], [])
    assert set(states_after_preview.values()) == {"active"}
    # And the real run marked exactly those three for removal, the recent and the live ones left alone
    assert (answer["affected_count"], answer["affected_ids"], answer["errors"]) == (3, [], [])
    assert fleet.states() == {
        "/w/task-done": "removal_requested",
        "/w/failed": "removal_requested",
        "/w/deleted": "removal_requested",
        "/w/recent": "active",
        "/w/live": "active",
    }
    # And the answer says what each was, and why it is orphaned
    shown = {w["path"]: w for w in answer["affected_worktrees"]}
    assert (shown["/w/task-done"]["task_status"], shown["/w/task-done"]["contract_status"]) == ("completed", "active")
    assert shown["/w/failed"]["contract_status"] == "failed"
    assert (shown["/w/deleted"]["contract_id"], shown["/w/deleted"]["task_id"]) == (None, None)
    assert shown["/w/deleted"]["finished_at"] is None
    assert all(w["daemon_id"] == fleet.daemon_id and w["daemon_status"] == "live" for w in shown.values())
    assert shown["/w/failed"]["branch"] == "b/w/failed"
    # And each existing contract got a worktree_removal_requested event by the admin; the summary counts three
    for path in ("/w/task-done", "/w/failed"):
        event = setup.events(paths[path])[-1]
        assert (event["type"], event["actor"]) == ("worktree_removal_requested", f"admin:{boss.principal.user_id}")
        assert event["payload"] == {
            "contract_id": paths[path],
            "daemon_id": fleet.daemon_id,
            "path": path,
            "branch": f"b{path}",
            "task_id": shown[path]["task_id"],
            "reason": "batch cleanup_worktrees",
        }
    assert [s["payload"] for s in setup.summaries_since(since)] == [
        {"operation": "cleanup_worktrees", "affected_count": 3, "error_count": 0, "dry_run": False}
    ]

    # When the daemon heartbeats next
    removals = fleet.heartbeat()

    # Then its answer asks it to remove them (and, by the heartbeat's own rule, any age, the recent one)
    assert set(removals) == {*old, "/w/recent"}

    # And a second run finds nothing left to ask
    again = run(client, boss, operation="cleanup_worktrees", worktrees=keys)
    assert (again["affected_count"], again["errors"]) == (0, [])


def test_cleanup_worktrees_without_a_threshold_takes_any_age_and_contract_ids_restrict_it(
    client: TestClient, setup: Setup, boss: Caller, fleet: Fleet
) -> None:
    # Given a contract whose two worktrees' tasks finished just now, and another contract's finished one
    one, other = setup.contract(fleet.owner, "active"), setup.contract(fleet.owner, "active")
    tasks = [fleet.task(one), fleet.task(one), fleet.task(other)]
    reported = [("/x/a", tasks[0]), ("/x/b", tasks[1]), ("/x/c", tasks[2])]
    fleet.heartbeat([{"path": p, "task_id": t} for p, t in reported])
    fleet.finish(one, tasks[0])
    fleet.finish(one, tasks[1])
    fleet.finish(other, tasks[2])

    # When an admin cleans up the worktrees of the first contract, of any age
    answer = run(client, boss, operation="cleanup_worktrees", contract_ids=[one])

    # Then both of its worktrees are marked, in (daemon, path) order, and the other contract's is not
    assert [w["path"] for w in answer["affected_worktrees"]] == ["/x/a", "/x/b"]
    assert fleet.states() == {"/x/a": "removal_requested", "/x/b": "removal_requested", "/x/c": "active"}
    assert [e["type"] for e in setup.events(one)][-2:] == ["worktree_removal_requested"] * 2


def test_cleanup_worktrees_walks_chunks_and_honours_the_limit(
    client: TestClient, setup: Setup, boss: Caller, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five orphaned worktrees (their contract failed) and chunks of two
    monkeypatch.setattr(batch_svc, "CHUNK_SIZE", 2)
    cid = setup.contract(fleet.owner, "active")
    task = fleet.task(cid)
    paths = [f"/y/{i}" for i in range(5)]
    fleet.heartbeat([{"path": p, "task_id": task} for p in paths])
    client.post(f"{API}/contracts/{cid}/status", json={"status": "failed"}, headers=fleet.owner.headers)
    keys = [fleet.key(p) for p in paths]

    # When an admin cleans them up with a limit of three, twice
    first = run(client, boss, operation="cleanup_worktrees", worktrees=keys, limit=3)
    second = run(client, boss, operation="cleanup_worktrees", worktrees=keys, limit=3)

    # Then the first run did three (over two chunks), the second the two left
    assert [w["path"] for w in first["affected_worktrees"]] == paths[:3]
    assert [w["path"] for w in second["affected_worktrees"]] == paths[3:]
    assert set(fleet.states().values()) == {"removal_requested"}


def test_a_worktree_removed_since_it_was_listed_is_skipped(
    client: TestClient,
    setup: Setup,
    boss: Caller,
    fleet: Fleet,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two orphaned worktrees, one of which its daemon removes right after the batch lists it
    cid = setup.contract(fleet.owner, "active")
    task = fleet.task(cid)
    fleet.heartbeat([{"path": p, "task_id": task} for p in ("/z/1", "/z/2")])
    fleet.finish(cid, task)
    listed = batch_sql.worktree_candidates

    def list_then_remove(conn: Conn, selection: batch_sql.WorktreeSelection, **kw: Any) -> list[dict[str, Any]]:
        rows = listed(conn, selection, **kw)
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute(
                "UPDATE worktrees SET state = 'removed' WHERE daemon_id = %s AND path = '/z/1'", (fleet.daemon_id,)
            )
        return rows

    monkeypatch.setattr(batch_sql, "worktree_candidates", list_then_remove)

    # When an admin cleans them up
    answer = run(client, boss, operation="cleanup_worktrees", worktrees=[fleet.key("/z/1"), fleet.key("/z/2")])

    # Then the removed one is re-checked under its lock and skipped; the other is marked
    assert ([w["path"] for w in answer["affected_worktrees"]], answer["errors"]) == (["/z/2"], [])
    assert fleet.states() == {"/z/1": "removed", "/z/2": "removal_requested"}


def test_a_worktree_held_by_another_change_is_an_error_and_the_rest_is_done(
    client: TestClient,
    setup: Setup,
    boss: Caller,
    fleet: Fleet,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two orphaned worktrees, the first locked by a long transaction (a daemon's report, say)
    monkeypatch.setattr(batch_svc, "LOCK_TIMEOUT", timedelta(milliseconds=200))
    cid = setup.contract(fleet.owner, "active")
    task = fleet.task(cid)
    fleet.heartbeat([{"path": p, "task_id": task} for p in ("/l/1", "/l/2")])
    fleet.finish(cid, task)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM worktrees WHERE daemon_id = %s AND path = '/l/1' FOR UPDATE", (fleet.daemon_id,))

        # When an admin cleans them up
        answer = run(client, boss, operation="cleanup_worktrees", worktrees=[fleet.key("/l/1"), fleet.key("/l/2")])
        other.rollback()

    # Then the held one is a CONFLICT error naming the worktree (and its contract); the other is marked
    assert [w["path"] for w in answer["affected_worktrees"]] == ["/l/2"]
    (error,) = answer["errors"]
    assert (error["contract_id"], error["daemon_id"], error["path"], error["code"]) == (
        cid,
        fleet.daemon_id,
        "/l/1",
        "CONFLICT",
    )
    assert fleet.states() == {"/l/1": "active", "/l/2": "removal_requested"}
    # And only the marked one has its event
    assert [e["payload"].get("path") for e in setup.events(cid) if e["type"] == "worktree_removal_requested"] == [
        "/l/2"
    ]


def test_only_admins_may_clean_up_worktrees(client: TestClient, setup: Setup, fleet: Fleet) -> None:
    # Given an orphaned worktree
    cid = setup.contract(fleet.owner, "active")
    task = fleet.task(cid)
    fleet.heartbeat([{"path": "/f/1", "task_id": task}])
    fleet.finish(cid, task)

    # When its owner tries to clean it up in a batch
    r = client.post(
        BATCH, json={"operation": "cleanup_worktrees", "worktrees": [fleet.key("/f/1")]}, headers=fleet.owner.headers
    )

    # Then it is refused, and the worktree is untouched
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert fleet.states() == {"/f/1": "active"}
