"""The scheduled functions' handlers, imported from ``functions/<job>/app.py`` and invoked with their
EventBridge sample events (``events/schedule/<job>.json``) against the test database, as the schedules
of ``template.yaml`` invoke them on AWS.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from pydantic import ValidationError

from makima.config import get_settings
from makima.db import heartbeats as heartbeats_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.principals import Principal
from makima.domain.supervisors import Heartbeat, SupervisorState
from makima.errors import DatabaseUnavailable

# Imported now, not by the first handler a test invokes: the Powertools logger keeps the stdout of the
# moment it is created, and a test's captured stdout is closed after that test.
from makima.lambda_support import runtime
from makima.services import contracts as contracts_svc
from makima.services import daemons as daemons_svc
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller
from tests.integration.test_lambda_handlers import (
    EVENTS,
    FUNCTIONS,
    SCHEDULED_FUNCTIONS,
    FakeContext,
    handler_of,
    load_event,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Output

pytestmark = pytest.mark.integration


def run(job: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    """Invoke the scheduled function ``job`` with its sample event (or ``event``), as EventBridge would."""
    return handler_of(job)(event if event is not None else load_event(f"schedule/{job}"), FakeContext())


@pytest.fixture(autouse=True)
def lambda_environment(lambda_container: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs as a deployed function with the default settings."""
    monkeypatch.delenv("MAKIMA_CONTRACTS__HEARTBEAT_TIMEOUT_SECONDS", raising=False)


def test_every_scheduled_function_is_tested_here() -> None:
    # The scheduled function folders, each with its sample event
    assert set(FUNCTIONS) >= SCHEDULED_FUNCTIONS
    for job in SCHEDULED_FUNCTIONS:
        assert (EVENTS / "schedule" / f"{job}.json").is_file(), job


# --- supervisor timeouts --------------------------------------------------------------------------------


def _start(db: PooledDatabase, owner: Principal, daemon_id: uuid.UUID, name: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A contract with a supervisor running on ``daemon_id`` that has sent one heartbeat just now."""
    contract = contracts_svc.create_contract(
        db, owner, name=name, description="", contract_type="simple", phase_guard=False
    )
    task_id = supervisors_svc.start_supervisor(db, owner, contract.id, daemon_id=daemon_id).supervisor.task_id
    beat = Heartbeat(task_id=task_id, state=SupervisorState.WORKING, phase="plan", timestamp=datetime.now(UTC))
    assert supervisors_svc.heartbeat(db, owner, contract.id, beat).accepted
    return contract.id, task_id


def _silence(database_url: str, task_id: uuid.UUID, minutes: int) -> None:
    """As if the supervisor's last heartbeat came ``minutes`` ago."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE supervisor_states SET last_heartbeat_at = now() - make_interval(mins => %s) WHERE task_id = %s",
            (minutes, task_id),
        )


def _state_changes(db: PooledDatabase, contract_id: uuid.UUID) -> list[dict[str, Any]]:
    with transaction(db) as conn:
        return conn.execute(
            "SELECT payload, actor FROM contract_events WHERE contract_id = %s AND type = 'supervisor_state_changed' "
            "ORDER BY id",
            (contract_id,),
        ).fetchall()


@pytest.fixture
def owner(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller()


@pytest.fixture
def daemon_id(db: PooledDatabase, owner: Caller) -> uuid.UUID:
    daemon = daemons_svc.register(db, owner.principal, name="scheduled-host", hostname="scheduled-host", capacity=4)
    return daemon.id


def test_supervisor_timeouts_mark_the_silent_supervisor_dead_and_spare_the_fresh_one(
    db: PooledDatabase, database_url: str, owner: Caller, daemon_id: uuid.UUID, output: Output
) -> None:
    # Given two running supervisors: one silent for 10 minutes, one that has just sent a heartbeat
    p = owner.principal
    silent_contract, silent = _start(db, p, daemon_id, "silent")
    fresh_contract, fresh = _start(db, p, daemon_id, "fresh")
    run("supervisor_timeouts")  # supervisors other tests left silent: the log lists at most 100
    _silence(database_url, silent, 10)
    output()

    # When the supervisor-timeouts function runs on its schedule
    result = run("supervisor_timeouts")
    logs, metrics = output()

    # Then the silent one is dead (interrupted), with the event that says so; the fresh one is untouched
    assert (result["job"], result["timeout_seconds"]) == ("supervisor_timeouts", 120)
    marked = {s["task_id"] for s in result["supervisors"]}
    assert result["marked_dead"] == len(marked)
    assert str(silent) in marked
    assert str(fresh) not in marked
    dead = supervisors_svc.status(db, p, silent_contract)
    assert (dead.state, dead.dead_at is not None) == (SupervisorState.INTERRUPTED, True)
    change = _state_changes(db, silent_contract)[-1]
    assert change["actor"] == "system"
    assert (change["payload"]["old_state"], change["payload"]["new_state"]) == ("working", "interrupted")
    alive = supervisors_svc.status(db, p, fresh_contract)
    assert (alive.state, alive.dead_at) == ("working", None)
    assert all(c["payload"]["new_state"] != "interrupted" for c in _state_changes(db, fresh_contract))
    # And the run is logged (correlated by the event id) and counted
    (swept,) = [r for r in logs if r["message"] == "supervisor timeouts swept"]
    event_id = load_event("schedule/supervisor_timeouts")["id"]
    assert (swept["correlation_id"], swept["job"], swept["marked_dead"]) == (
        event_id,
        "supervisor_timeouts",
        len(marked),
    )
    assert str(silent) in {s["task_id"] for s in swept["supervisors"]}
    assert metrics["SupervisorsMarkedDead"] == len(marked)

    # And the next run does not mark the dead one again
    assert str(silent) not in {s["task_id"] for s in run("supervisor_timeouts")["supervisors"]}


def test_supervisor_timeouts_follow_the_configured_timeout(
    db: PooledDatabase, database_url: str, owner: Caller, daemon_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a heartbeat timeout of 15 minutes, and a supervisor silent for 10
    monkeypatch.setenv("MAKIMA_CONTRACTS__HEARTBEAT_TIMEOUT_SECONDS", "900")
    get_settings.cache_clear()
    contract_id, task_id = _start(db, owner.principal, daemon_id, "patient")
    _silence(database_url, task_id, 10)

    # When the supervisor-timeouts function runs
    result = run("supervisor_timeouts")

    # Then the supervisor is still alive: it is not late yet
    assert result["timeout_seconds"] == 900
    assert str(task_id) not in {s["task_id"] for s in result["supervisors"]}
    assert supervisors_svc.status(db, owner.principal, contract_id).dead_at is None


# --- heartbeat retention --------------------------------------------------------------------------------


def test_heartbeat_retention_creates_partitions_ahead_and_drops_expired_ones(
    db: PooledDatabase, output: Output
) -> None:
    # Given hourly partitions from three days ago (past the 24-hour retention) ...
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    with transaction(db) as conn:
        heartbeats_sql.ensure_partitions(conn, now=three_days_ago)
        expired = {heartbeats_sql.partition_name(three_days_ago + timedelta(hours=h)) for h in range(-1, 7)}
        assert expired <= set(heartbeats_sql.partitions(conn))
        # ... and the furthest partition ahead missing (future hours hold no heartbeats yet)
        ahead = heartbeats_sql.partition_name(datetime.now(UTC) + timedelta(hours=6))
        conn.execute(f"DROP TABLE IF EXISTS {ahead}")
    output()

    # When the heartbeat-retention function runs on its schedule
    result = run("heartbeat_retention")
    logs, metrics = output()

    # Then it created the missing partition and dropped the expired ones, and the current hour has its own
    assert result["job"] == "heartbeat_retention"
    assert ahead in result["created"]
    assert expired <= set(result["dropped"])
    with transaction(db) as conn:
        now_present = set(heartbeats_sql.partitions(conn))
    assert ahead in now_present
    assert heartbeats_sql.partition_name(datetime.now(UTC)) in now_present
    assert not expired & now_present
    # And what it did is logged and counted
    (maintained,) = [r for r in logs if r["message"] == "heartbeat partitions maintained"]
    assert (maintained["partitions_created"], maintained["partitions_dropped"]) == (
        result["created"],
        result["dropped"],
    )
    assert metrics["HeartbeatPartitionsCreated"] == len(result["created"])
    assert metrics["HeartbeatPartitionsDropped"] == len(result["dropped"])

    # And a second run does it all again for nothing: it is idempotent
    again = run("heartbeat_retention")
    assert ahead not in again["created"]
    assert not expired & set(again["dropped"])


# --- worktree retention (issue 13, defect 6) -------------------------------------------------------------


def test_worktree_retention_deletes_only_worktrees_removed_past_the_retention(
    db: PooledDatabase, database_url: str, make_caller: Callable[..., Caller], output: Output
) -> None:
    # Given a daemon's worktrees: two dropped from its report (one of them 10 days ago), one it still
    # holds (reported long ago), and one waiting for removal since long ago
    owner = make_caller()
    daemon = daemons_svc.register(
        db, owner.principal, name=f"retention-{uuid.uuid4().hex[:8]}", hostname="", capacity=1
    )
    paths = ["/old-removed", "/new-removed", "/held", "/asked-back"]
    daemons_svc.daemon_heartbeat(db, owner.principal, daemon.id, worktrees=[{"path": p} for p in paths])
    daemons_svc.daemon_heartbeat(db, owner.principal, daemon.id, worktrees=[{"path": p} for p in paths[2:]])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE worktrees SET removed_at = now() - interval '10 days' "
            "WHERE daemon_id = %s AND path = '/old-removed'",
            (daemon.id,),
        )
        conn.execute(
            "UPDATE worktrees SET reported_at = now() - interval '60 days' WHERE daemon_id = %s AND path = '/held'",
            (daemon.id,),
        )
        conn.execute(
            "UPDATE worktrees SET state = 'removal_requested', requested_at = now() - interval '60 days' "
            "WHERE daemon_id = %s AND path = '/asked-back'",
            (daemon.id,),
        )

    def held() -> list[str]:
        return [w.path for w in daemons_svc.worktrees(db, owner.principal, daemon.id, limit=100).items]

    output()
    # When the worktree-retention function runs on its schedule (7 days by default)
    result = run("worktree_retention")
    logs, metrics = output()

    # Then only the worktree removed 10 days ago is gone; what it did is logged and counted
    assert result["job"] == "worktree_retention"
    assert result["purged"] >= 1
    assert result["retention_days"] == 7
    assert held() == ["/asked-back", "/held", "/new-removed"]
    (purged,) = [r for r in logs if r["message"] == "removed worktrees purged"]
    assert purged["purged"] == result["purged"]
    assert metrics["WorktreesPurged"] == result["purged"]

    # And eight days on (a controllable clock), the one removed today goes too; held ones never do
    from makima.lambda_support import scheduled

    later = scheduled.worktree_retention(db, now=datetime.now(UTC) + timedelta(days=8))
    assert later["purged"] >= 1
    assert held() == ["/asked-back", "/held"]


def test_purging_goes_in_batches(db: PooledDatabase, make_caller: Callable[..., Caller]) -> None:
    owner = make_caller()
    daemon = daemons_svc.register(db, owner.principal, name=f"batches-{uuid.uuid4().hex[:8]}", hostname="", capacity=1)
    daemons_svc.daemon_heartbeat(db, owner.principal, daemon.id, worktrees=[{"path": f"/{i}"} for i in range(25)])
    daemons_svc.daemon_heartbeat(db, owner.principal, daemon.id, worktrees=[])
    far = datetime.now(UTC) + timedelta(days=3650)
    assert daemons_svc.purge_removed_worktrees(db, timedelta(days=1), now=far, batch=10) >= 25
    assert daemons_svc.worktrees(db, owner.principal, daemon.id).items == []


# --- failures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", sorted(SCHEDULED_FUNCTIONS))
def test_a_run_without_its_database_fails_the_invocation(
    job: str, monkeypatch: pytest.MonkeyPatch, output: Output
) -> None:
    # Given a container whose database cannot be reached
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_DB_CONNECT_TIMEOUT", "1")
    runtime.reset()

    # When the scheduled function runs, then the invocation fails: Lambda retries it, then the event
    # goes to the function's dead-letter queue (nothing is reported as done that was not)
    with pytest.raises(DatabaseUnavailable):
        run(job)

    # And the failure is logged with its error, and counted
    logs, metrics = output()
    (failed,) = [r for r in logs if r["message"] == "scheduled job failed"]
    assert (failed["level"], failed["job"]) == ("ERROR", job)
    assert "DatabaseUnavailable" in failed["exception_name"]
    assert metrics["ScheduledJobFailed"] == 1


@pytest.mark.parametrize("job", sorted(SCHEDULED_FUNCTIONS))
def test_an_event_that_is_not_scheduled_is_refused(job: str) -> None:
    # Given an event that is not from EventBridge (an HTTP API one)
    event = load_event("http/health_get")

    # When a scheduled function is invoked with it, then it refuses before doing anything
    with pytest.raises(ValidationError):
        run(job, event)
