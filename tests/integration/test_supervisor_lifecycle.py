"""The supervisor lifecycle over time (issue 17), against the real database with a controllable clock:
the scheduled jobs (timeout sweep, heartbeat retention) are called with ``now=`` a moment of the test's
choosing, so "a clean stop, then two hours pass" and "the flag is turned off, then the sweep runs" are
tests, not hopes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import ContractsConfig, Settings
from makima.db import heartbeats as heartbeats_sql
from makima.db.connection import PooledDatabase, transaction
from makima.flags import Flag
from makima.local.scheduler import jobs_for
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller
from tests.integration.test_supervisors import API, Sup, start

pytestmark = pytest.mark.integration
TIMEOUT = timedelta(seconds=120)


def sweep(db: PooledDatabase, at: datetime, *, enabled: bool = True) -> set[str]:
    """One run of the timeout sweep at ``at``: the task ids it marked dead."""
    return {
        str(r["task_id"])
        for r in supervisors_svc.detect_dead_supervisors(db, TIMEOUT, heartbeats_enabled=enabled, now=at)
    }


def last_heartbeat(sup: Sup) -> datetime:
    at = sup.status()["last_heartbeat"]
    assert at is not None
    return datetime.fromisoformat(at)


def set_last_heartbeat(database_url: str, task_id: str, at: datetime) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE supervisor_states SET last_heartbeat_at = %s WHERE task_id = %s", (at, task_id))


def state_changes(sup: Sup) -> list[dict[str, Any]]:
    return [e for e in sup.events() if e["type"] == "supervisor_state_changed"]


def shutdown(sup: Sup, seq: int = 1, **fields: Any) -> dict[str, Any]:
    return dict(sup.save(seq=seq, save_point="shutdown", state="idle", **fields))


# --- item 1: a clean shutdown is a clean shutdown, however long ago --------------------------------------


def test_a_clean_stop_then_two_hours_pass_is_restored_clean(
    db: PooledDatabase, client: TestClient, user: Caller
) -> None:
    # Given a supervisor that beat, then saved at shutdown (its daemon stopped cleanly)
    sup = start(client, user, name="lc-clean")
    sup.beat()
    sup.save(seq=1, conversation_append=[{"role": "assistant", "content": "half done"}])
    shutdown(sup, seq=2, conversation_offset=1)
    stopped = sup.status()
    assert (stopped["stopped"], stopped["alive"], stopped["adoptable"]) == (True, True, True)
    # When two hours pass, the sweep running every minute of them
    start_at = last_heartbeat(sup)
    for minutes in (1, 3, 30, 120):
        assert sup.task_id not in sweep(db, start_at + timedelta(minutes=minutes))
    # Then it was never marked dead, no "interrupted" event was written, and it restores as clean
    s = sup.status()
    assert (s["alive"], s["dead_since"], s["state"]) == (True, None, "idle")
    assert all(e["payload"]["new_state"] != "interrupted" for e in state_changes(sup))
    daemon_b = client.post(f"{API}/daemons", json={"name": "lc-clean-b"}, headers=user.headers).json()
    r = sup.restore(daemon_id=daemon_b["id"])
    assert (r["mode"], r["generation"]) == ("clean", 2)
    assert "shut down cleanly" in r["restoration_context"]
    # and restoration ends the stop: it is running again, and is swept like any other if it goes silent
    s = sup.status()
    assert (s["stopped"], s["adoptable"], s["daemon_id"]) == (False, False, daemon_b["id"])


def test_a_heartbeat_after_the_shutdown_save_brings_it_back_to_life(
    db: PooledDatabase, client: TestClient, user: Caller, database_url: str
) -> None:
    sup = start(client, user, name="lc-back")
    shutdown(sup)
    assert sup.status()["stopped"] is True
    # A heartbeat sent after the shutdown save: the supervisor runs again
    assert sup.beat(state="working").json()["accepted"] is True
    s = sup.status()
    assert (s["stopped"], s["state"]) == (False, "working")
    # so going silent now is a crash: swept, and restored as one
    assert sup.task_id in sweep(db, last_heartbeat(sup) + TIMEOUT + timedelta(seconds=1))
    assert sup.restore()["mode"] == "crash"


def test_a_heartbeat_sent_before_the_shutdown_save_does_not_undo_it(
    db: PooledDatabase, client: TestClient, user: Caller
) -> None:
    sup = start(client, user, name="lc-race")
    sent_before = datetime.now(UTC)
    shutdown(sup)
    # The daemon's batch collected the message before the save and delivered it after: history only
    assert sup.beat(state="working", timestamp=sent_before.isoformat()).json()["accepted"] is True
    s = sup.status()
    assert (s["stopped"], s["state"]) == (True, "idle")
    assert sup.task_id not in sweep(db, datetime.now(UTC) + timedelta(hours=2))
    assert sup.restore()["mode"] == "clean"


# --- item 2: the heartbeat flag off stops the sweep, and its return gives a full timeout of grace ---------


class SwitchableFlags:
    def __init__(self) -> None:
        self.off: set[Flag] = set()

    def enabled(self, flag: Flag) -> bool:
        return flag not in self.off


class NoPublisher:
    def publish(self, events: Any) -> None:
        raise AssertionError("not used")


@pytest.fixture(autouse=True)
def forget_pauses(db: PooledDatabase) -> Iterator[None]:
    """The sweep's memory of the flag is one row for the whole database: a pause recorded by one test
    would give every other test's supervisors a grace period."""
    yield
    with transaction(db) as conn:
        conn.execute("DELETE FROM scheduled_job_state")


def test_the_local_timeout_job_reads_the_flag_on_every_run(
    db: PooledDatabase, client: TestClient, user: Caller, database_url: str
) -> None:
    sup = start(client, user, name="lc-flag-job")
    set_last_heartbeat(database_url, sup.task_id, datetime.now(UTC) - timedelta(hours=1))
    flags = SwitchableFlags()
    (job,) = [j for j in jobs_for(db, Settings(), NoPublisher(), flags=flags) if j.name == "supervisor_timeouts"]
    flags.off.add(Flag.SUPERVISOR_HEARTBEAT)
    assert job.run() == []
    assert sup.status()["alive"] is True
    flags.off.clear()  # back on: the grace runs from the run that saw it off (just now)
    swept = job.run()
    assert isinstance(swept, list)
    assert sup.task_id not in {str(r["task_id"]) for r in swept}
    assert sup.status()["alive"] is True


def test_the_flag_is_turned_off_then_the_sweep_runs_and_marks_nobody(
    db: PooledDatabase, client: TestClient, user: Caller, database_url: str
) -> None:
    # Given a supervisor whose heartbeats stopped a day ago (the flag went off: they were refused)
    sup = start(client, user, name="lc-flag")
    flag_off_at = datetime.now(UTC) - timedelta(days=1)
    set_last_heartbeat(database_url, sup.task_id, flag_off_at - timedelta(seconds=30))
    # When the sweep runs while the flag is off (as of the moment it went off, then long after)
    assert sweep(db, flag_off_at, enabled=False) == set()
    assert sweep(db, flag_off_at + timedelta(minutes=10), enabled=False) == set()
    assert sup.status()["alive"] is True
    # Then, the flag back on, the first sweeps after it give the supervisor a full timeout of grace
    # from the last moment the sweep saw the flag off ...
    back_on = flag_off_at + timedelta(minutes=10)
    assert sup.task_id not in sweep(db, back_on + timedelta(seconds=30))
    assert sup.task_id not in sweep(db, back_on + TIMEOUT - timedelta(seconds=1))
    assert sup.status()["alive"] is True
    # ... and only then is a supervisor that still does not beat marked dead
    assert sup.task_id in sweep(db, back_on + TIMEOUT + timedelta(seconds=1))
    assert sup.status()["alive"] is False


def test_the_grace_is_kept_in_the_database_not_in_the_process(db: PooledDatabase) -> None:
    # The sweep runs in Lambda containers that remember nothing: the last "flag off" is a row.
    at = datetime.now(UTC) - timedelta(days=2)
    sweep(db, at, enabled=False)
    with transaction(db) as conn:
        row = conn.execute(
            "SELECT paused_at FROM scheduled_job_state WHERE job = %s", (supervisors_svc.TIMEOUT_SWEEP,)
        ).fetchone()
    assert row is not None
    assert row["paused_at"] >= at


# --- item 3: a restart request makes a dead supervisor adoptable ------------------------------------------


def reassignable(client: TestClient, caller: Caller) -> list[str]:
    r = client.get(f"{API}/tasks/reassignable", headers=caller.headers)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["tasks"]]


def test_a_restart_of_a_dead_supervisor_on_a_live_daemon_makes_it_adoptable(
    db: PooledDatabase, client: TestClient, user: Caller
) -> None:
    # Given a supervisor that died while its daemon lives on (the daemon keeps beating)
    sup = start(client, user, name="lc-restart-a")
    sup.save(seq=1)
    sup.beat()
    assert sup.task_id in sweep(db, last_heartbeat(sup) + TIMEOUT + timedelta(seconds=1))
    assert client.post(f"{API}/daemons/{sup.daemon_id}/heartbeat", json={}, headers=user.headers).status_code == 200
    assert sup.task_id not in reassignable(client, user)  # dead, but nobody asked for a restart
    # When the owner asks for a restart
    r = client.post(sup.url("/supervisor/restart"), json={"reason": "stuck"}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["restart_requested"], r.json()["adoptable"]) == (True, True)
    # Then a live daemon finds its task adoptable and claims it; nobody else can claim it after
    assert sup.task_id in reassignable(client, user)
    b, c = (client.post(f"{API}/daemons", json={"name": n}, headers=user.headers).json()["id"] for n in ("b", "c"))
    claim = client.post(f"{API}/tasks/{sup.task_id}/claim", json={"daemon_id": b}, headers=user.headers)
    assert claim.status_code == 200, claim.text
    assert sup.task_id not in reassignable(client, user)
    taken = client.post(f"{API}/tasks/{sup.task_id}/claim", json={"daemon_id": c}, headers=user.headers)
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "CONFLICT")
    # and restores it: alive, on the new daemon, the restart done with
    restored = sup.restore(daemon_id=b)
    assert (restored["mode"], restored["generation"]) == ("crash", 2)
    s = sup.status()
    assert (s["alive"], s["daemon_id"], s["restart_requested"], s["adoptable"]) == (True, b, False, False)
    assert sup.task_id not in reassignable(client, user)


def test_a_restart_of_a_live_supervisor_only_asks_it(client: TestClient, user: Caller) -> None:
    sup = start(client, user, name="lc-restart-live")
    sup.beat()
    r = client.post(sup.url("/supervisor/restart"), json={}, headers=user.headers).json()
    assert (r["restart_requested"], r["adoptable"]) == (True, False)
    assert sup.task_id not in reassignable(client, user)
    assert sup.beat().json()["restart_requested"] is True


# --- item 9: sync answers synced with the refreshed state --------------------------------------------------


@pytest.fixture
def beating() -> Iterator[Any]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def begin(sup: Sup, every: float = 0.3, **fields: Any) -> None:
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                sup.beat(**fields)
                stop.wait(every)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        stops.append((stop, t))

    yield begin
    for stop, t in stops:
        stop.set()
        t.join()


def test_sync_by_default_waits_for_the_next_heartbeat_and_answers_synced(
    client: TestClient, user: Caller, beating: Any
) -> None:
    sup = start(client, user, name="lc-sync")
    sup.beat(state="working")
    beating(sup, state="blocked", current_activity="waiting on CI")
    started = time.monotonic()
    r = client.post(sup.url("/supervisor/sync"), json={}, headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["synced"], body["state"]) == (True, "blocked")
    # answered when a heartbeat came (every 0.3 s), not at the end of the default wait (25 s here)
    assert time.monotonic() - started < 15


def test_sync_that_no_heartbeat_collects_answers_202_not_synced(client: TestClient, user: Caller) -> None:
    sup = start(client, user, name="lc-sync-none")
    sup.beat()
    r = client.post(sup.url("/supervisor/sync"), json={"wait_seconds": 0.5}, headers=user.headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["synced"], body["sync_requested"], body["state"]) == (False, True, "working")
    assert body["waited_seconds"] >= 0.5
    assert sup.beat().json()["sync_requested"] is True  # the request stands


def test_sync_of_a_stopped_supervisor_is_refused_at_once(client: TestClient, user: Caller) -> None:
    sup = start(client, user, name="lc-sync-stopped")
    shutdown(sup)
    r = client.post(sup.url("/supervisor/sync"), json={}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "SUPERVISOR_DEAD")
    assert r.json()["error"]["details"]["stopped_since"] is not None


# --- item 10: the service tells the interval --------------------------------------------------------------


def test_every_answer_a_client_paces_itself_by_carries_the_heartbeat_interval(db: PooledDatabase, user: Caller) -> None:
    settings = Settings(contracts=ContractsConfig(heartbeat_interval_seconds=7, heartbeat_timeout_seconds=60))
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as c:
        h = user.headers
        daemon = c.post(f"{API}/daemons", json={"name": "lc-interval"}, headers=h)
        assert daemon.json()["heartbeat_interval_seconds"] == 7
        cid = c.post(f"{API}/contracts", json={"name": "i", "contract_type": "simple"}, headers=h).json()["id"]
        started = c.post(f"{API}/contracts/{cid}/supervisor", json={"daemon_id": daemon.json()["id"]}, headers=h)
        assert started.json()["heartbeat_interval_seconds"] == 7
        task_id = started.json()["supervisor"]["task_id"]
        hb = {"task_id": task_id, "state": "working", "phase": "plan", "timestamp": datetime.now(UTC).isoformat()}
        assert (
            c.post(f"{API}/contracts/{cid}/supervisor/heartbeat", json=hb, headers=h).json()[
                "heartbeat_interval_seconds"
            ]
            == 7
        )
        batch = c.post(
            f"{API}/supervisors/heartbeats", json={"heartbeats": [{**hb, "contract_id": cid}]}, headers=h
        ).json()
        assert (batch["heartbeat_interval_seconds"], batch["results"][0]["heartbeat_interval_seconds"]) == (7, 7)
        dhb = c.post(f"{API}/daemons/{daemon.json()['id']}/heartbeat", json={}, headers=h).json()
        assert dhb["heartbeat_interval_seconds"] == 7
        restored = c.post(f"{API}/contracts/{cid}/supervisor/restore", json={}, headers=h).json()
        assert restored["heartbeat_interval_seconds"] == 7


# --- item 11: heartbeat history is 24 hours ---------------------------------------------------------------


def _insert_heartbeat(db: PooledDatabase, sup: Sup, at: datetime, activity: str) -> None:
    with transaction(db) as conn:
        heartbeats_sql.ensure_partitions(conn, now=at, hours_ahead=0, hours_behind=0)
        conn.execute(
            "INSERT INTO supervisor_heartbeats (task_id, contract_id, state, phase, current_activity, sent_at,"
            " received_at) VALUES (%s, %s, 'working', 'plan', %s, %s, %s)",
            (sup.task_id, sup.contract_id, activity, at, at),
        )


def test_the_history_endpoint_never_returns_rows_older_than_24_hours(
    db: PooledDatabase, client: TestClient, user: Caller
) -> None:
    sup = start(client, user, name="lc-history")
    now = datetime.now(UTC)
    for hours, label in ((24.5, "old"), (23.5, "recent"), (1, "new")):
        _insert_heartbeat(db, sup, now - timedelta(hours=hours), label)
    r = client.get(sup.url("/supervisor/heartbeats"), params={"limit": 100}, headers=user.headers)
    assert [h["activity"] for h in r.json()["heartbeats"]] == ["new", "recent"]


def test_retention_keeps_nothing_past_25_hours_and_everything_of_the_last_23(
    db: PooledDatabase, client: TestClient, user: Caller
) -> None:
    sup = start(client, user, name="lc-retention")
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    # a heartbeat every 10 minutes for 30 hours
    for i in range(0, 30 * 6 + 1):
        _insert_heartbeat(db, sup, t0 + timedelta(minutes=10 * i), f"m{i}")
    # the job runs hourly, at some minute of the hour; check every run of two hours' worth
    base = datetime.now(UTC).replace(second=0, microsecond=0)
    for run in range(3):
        at = base + timedelta(minutes=17) + timedelta(hours=run)
        supervisors_svc.maintain_heartbeat_partitions(db, now=at)
        with transaction(db) as conn:
            row = conn.execute(
                "SELECT min(received_at) AS oldest, max(received_at) FILTER (WHERE received_at < %s) AS young_gone"
                " FROM supervisor_heartbeats WHERE task_id = %s",
                (at - timedelta(hours=23), sup.task_id),
            ).fetchone()
            assert row is not None
            # nothing older than 24 h + 1 h of partition granularity stays (until the next run)
            assert at + timedelta(hours=1) - row["oldest"] <= timedelta(hours=25), (run, row)
            # and nothing younger than 23 h is gone
            kept = conn.execute(
                "SELECT count(*) AS n FROM supervisor_heartbeats WHERE task_id = %s AND received_at >= %s",
                (sup.task_id, at - timedelta(hours=23)),
            ).fetchone()
        assert kept is not None
        expected = sum(1 for i in range(30 * 6 + 1) if t0 + timedelta(minutes=10 * i) >= at - timedelta(hours=23))
        assert kept["n"] == expected


# --- item 15: a late heartbeat cannot undo a finished state -----------------------------------------------


def test_a_late_heartbeat_after_the_contract_completed_is_history_only(client: TestClient, user: Caller) -> None:
    sup = start(client, user, name="lc-late")
    sent_before = datetime.now(UTC)
    sup.beat(state="working", progress=60)
    r = client.post(sup.url("/status"), json={"status": "completed"}, headers=user.headers)
    assert r.status_code == 200, r.text
    before = state_changes(sup)
    # a heartbeat sent before completion, applied after it
    late = sup.beat(state="blocked", progress=70, current_activity="still at it", timestamp=sent_before.isoformat())
    assert late.json()["accepted"] is True
    s = sup.status()
    assert (s["state"], s["progress"], s["current_activity"]) == ("working", 60, "")
    assert state_changes(sup) == before
    history = client.get(sup.url("/supervisor/heartbeats"), params={"limit": 10}, headers=user.headers).json()
    assert next(h["activity"] for h in history["heartbeats"]) == "still at it"


def test_a_supervisor_that_reported_itself_finished_stays_finished(client: TestClient, user: Caller) -> None:
    sup = start(client, user, name="lc-final")
    assert sup.beat(state="failed").json()["accepted"] is True
    before = state_changes(sup)
    assert sup.beat(state="working").json()["accepted"] is True
    assert sup.status()["state"] == "failed"
    assert state_changes(sup) == before


# --- item 13: restoration logs a fresh start, and tells the owner of questions pending again -------------


@pytest.fixture
def sup(client: TestClient, user: Caller) -> Sup:
    return start(client, user, name="lc-restore")


def test_a_fresh_restore_logs_its_warning(sup: Sup, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="makima.restoration"):
        assert sup.restore()["mode"] == "fresh"
    (record,) = [r for r in caplog.records if r.name == "makima.restoration"]
    assert record.levelno == logging.WARNING
    assert sup.contract_id in record.getMessage()
    assert sup.task_id in record.getMessage()
    assert "no saved state" in record.getMessage()


def test_restoring_with_pending_questions_tells_the_owner_they_are_pending_again(sup: Sup) -> None:
    h = sup.caller.headers
    asked = [sup.client.post(sup.url("/questions"), json={"question": q}, headers=h).json()["id"] for q in ("A?", "B?")]
    sup.save(seq=1, state="waiting_for_user")
    r = sup.restore()
    assert [q["id"] for q in r["pending_questions"]] == asked
    redelivered = [e for e in sup.events() if e["type"] == "question_redelivered"]
    assert [(e["payload"]["question_id"], e["payload"]["question"]) for e in redelivered] == [
        (asked[0], "A?"),
        (asked[1], "B?"),
    ]
    assert {e["payload"]["generation"] for e in redelivered} == {r["generation"]}


def test_the_lambda_timeout_job_reads_the_flag_on_every_run(
    db: PooledDatabase, client: TestClient, user: Caller, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from makima.config import get_settings
    from makima.lambda_support import scheduled

    sup = start(client, user, name="lc-flag-lambda")
    set_last_heartbeat(database_url, sup.task_id, datetime.now(UTC) - timedelta(hours=1))
    # The flag off (the local flag store serves the settings; AppConfig on AWS)
    monkeypatch.setenv("MAKIMA_FEATURE_FLAGS__SUPERVISOR_HEARTBEAT", "false")
    get_settings.cache_clear()
    try:
        result = scheduled.supervisor_timeouts(db)
    finally:
        monkeypatch.delenv("MAKIMA_FEATURE_FLAGS__SUPERVISOR_HEARTBEAT")
        get_settings.cache_clear()
    assert (result["heartbeats_enabled"], result["marked_dead"]) == (False, 0)
    assert sup.status()["alive"] is True
    # Back on: the next run reads it again, and gives the silent supervisor its grace from the pause
    result = scheduled.supervisor_timeouts(db)
    assert result["heartbeats_enabled"] is True
    assert sup.task_id not in {s["task_id"] for s in result["supervisors"]}


def test_a_heartbeat_that_waited_for_the_sync_request_counts_as_delivering_it(
    db: PooledDatabase, client: TestClient, user: Caller, database_url: str
) -> None:
    # Given a sync request taking the supervisor's row while a heartbeat is already on its way: the
    # heartbeat's statement began before the request was stamped, and waits for the row
    from makima.db import supervisors as supervisors_sql

    sup = start(client, user, name="lc-sync-race")
    sup.beat()
    answers: list[dict[str, Any]] = []
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1 FROM supervisor_states WHERE task_id = %s FOR UPDATE", (sup.task_id,))
        beating = threading.Thread(target=lambda: answers.append(sup.beat(state="blocked").json()))
        beating.start()
        time.sleep(0.5)
        row = conn.execute(
            "UPDATE supervisor_states SET sync_requested_at = clock_timestamp() WHERE task_id = %s"
            " RETURNING sync_requested_at",
            (sup.task_id,),
        ).fetchone()
        assert row is not None
        requested_at = row[0]
    beating.join()
    # When the heartbeat goes through, it collects the request (its answer asks for the sync) ...
    assert answers[0]["sync_requested"] is True
    # ... and a sync call waiting for a delivery since the request sees it
    with db.connection() as c:
        assert supervisors_sql.sync_delivered_since(c, UUID(sup.task_id), requested_at) is not None
