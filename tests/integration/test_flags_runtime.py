"""Feature flags switched at runtime, on a running app, through the flags file the local stack reads
(``flags_file``; ``flags_max_age = 0`` here so a switch is seen on the next call): each test turns one
flag off, checks that every part of its feature is off and that the other features still work, then
turns it back on and checks the feature is back (so the "off" assertions cannot pass for another reason).

- ``monitoring_dashboard``: the dashboard, the WebSocket monitor (new connections refused, open ones
  closed), the stale detector job (local scheduler and the Lambda job), batch operations and ``/metrics``.
- ``auto_complete``: auto-advance and auto-completion on deliverables, tasks and answers, and the
  completion endpoints (phase-readiness, check-completion, the per-contract switch).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import FeatureFlagsConfig, Settings, get_settings
from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.principals import Role
from makima.flags import Flag, LocalFlagValues, build_flags
from makima.lambda_support import runtime, scheduled, websocket
from makima.local.monitor import CLOSE_FEATURE_DISABLED, MONITOR_PATH, LocalHub, OutboxPump, mount_monitor
from makima.local.scheduler import Job, jobs_for
from tests.conftest import Caller
from tests.drivers import Driver
from tests.integration.test_monitor_aws import (  # noqa: F401 - aws is a fixture
    Aws,
    aws,
    broadcast,
    connect,
    drain_to_bus,
    new_contract,
    posted,
    send,
    subscribe,
)

pytestmark = pytest.mark.integration


@dataclass
class Running:
    """An app of the local stack (API, monitor, outbox pump, scheduled jobs) and its flags file."""

    client: TestClient
    pump: OutboxPump
    stale_job: Job
    flags_file: Path

    def switch(self, **flags: bool) -> None:
        lines = [f"{name} = {str(value).lower()}" for name, value in flags.items()]
        self.flags_file.write_text("[feature_flags]\n" + "\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def running(db: PooledDatabase, tmp_path: Path) -> Iterator[Running]:
    flags_file = tmp_path / "flags.toml"
    settings = Settings(flags_file=str(flags_file), flags_max_age=0)
    flags = build_flags(settings)
    hub = LocalHub(f"local:flags-{uuid.uuid4().hex[:8]}")
    pump = OutboxPump(db, hub, flags=flags)  # not started: the test runs its sweeps
    app = create_app(db, settings=settings, events=pump)
    mount_monitor(app, db, hub, flags)
    (stale_job,) = [j for j in jobs_for(db, settings, pump.publisher, flags) if j.name == "stale_detector"]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Running(client, pump, stale_job, flags_file)


def _idle(database_url: str, contract_id: str, hours: float) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - make_interval(secs => %s) WHERE id = %s",
            (hours * 3600, contract_id),
        )


def _stale_reports(database_url: str, contract_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM contract_events WHERE contract_id = %s AND type = 'stale_detected'", (contract_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _disabled(response: Any, feature: str) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "FEATURE_DISABLED"
    assert response.json()["error"]["details"] == {"feature": feature}


def _batch(client: TestClient, admin: Caller, contract_id: str) -> Any:
    body = {"operation": "pause_all", "contract_ids": [contract_id], "dry_run": True}
    return client.post("/api/v1/contracts/batch", json=body, headers=admin.headers)


def _auto_complete_works(client: TestClient, user: Caller) -> None:
    """The auto_complete feature is on: a met gate advances the phase, the readiness endpoint answers."""
    d = Driver(client, user.headers, "simple")
    d.post("/status", {"status": "active"})
    assert d.deliver("plan-document")["phase"] == "execute"
    assert d.readiness()["phase"] == "execute"


def _dashboard_feature_works(r: Running, admin: Caller, user: Caller, contract_id: str) -> None:
    """Every part of the monitoring_dashboard feature answers."""
    c = r.client
    assert c.get("/api/v1/contracts/dashboard", headers=user.headers).status_code == 200
    assert c.get("/metrics", headers=admin.headers).status_code == 200
    assert _batch(c, admin, contract_id).status_code == 200
    with c.websocket_connect(f"{MONITOR_PATH}?token={user.token}") as ws:
        ws.send_json({"contract_ids": [contract_id]})
        assert ws.receive_json()["type"] == "subscribed"


def test_monitoring_dashboard_off_at_runtime_turns_off_its_whole_feature_and_nothing_else(
    running: Running, make_caller: Callable[..., Caller], database_url: str
) -> None:
    r, c = running, running.client
    admin, user = make_caller(role=Role.ADMIN), make_caller()
    d = Driver(c, user.headers, "simple")

    # Given the feature on, every part of it working, and a monitor open
    _dashboard_feature_works(r, admin, user, d.id)
    with c.websocket_connect(f"{MONITOR_PATH}?token={user.token}") as open_monitor:
        open_monitor.send_json({"contract_ids": [d.id]})
        assert open_monitor.receive_json()["type"] == "subscribed"

        # When the operator switches monitoring_dashboard off in the flags file, and the pump sweeps
        r.switch(monitoring_dashboard=False)
        r.pump.run_once()

        # Then the open monitor is told why, and closed
        message = open_monitor.receive_json()
        assert (message["type"], message["code"]) == ("error", "FEATURE_DISABLED")
        assert message["details"] == {"feature": "monitoring_dashboard"}
        closed = open_monitor.receive()
        assert (closed["type"], closed["code"]) == ("websocket.close", CLOSE_FEATURE_DISABLED)

    # And a new monitor is refused the same way
    with c.websocket_connect(f"{MONITOR_PATH}?token={user.token}") as refused:
        assert refused.receive_json()["code"] == "FEATURE_DISABLED"
        assert refused.receive()["code"] == CLOSE_FEATURE_DISABLED
    # And the dashboard, batch operations and /metrics answer FEATURE_DISABLED, the batch doing nothing
    _disabled(c.get("/api/v1/contracts/dashboard", headers=user.headers), "monitoring_dashboard")
    _disabled(c.get("/metrics", headers=admin.headers), "monitoring_dashboard")
    d.post("/status", {"status": "active"})
    _disabled(
        c.post(
            "/api/v1/contracts/batch", json={"operation": "pause_all", "contract_ids": [d.id]}, headers=admin.headers
        ),
        "monitoring_dashboard",
    )
    assert d.get()["status"] == "active"
    # And the stale detector does nothing, though a contract has been idle for two hours
    _idle(database_url, d.id, hours=2)
    assert r.stale_job.run() is None
    assert _stale_reports(database_url, d.id) == 0
    # And the other features work as before: contracts, statuses, auto-advance, heartbeats' neighbour
    # endpoints (tasks), completion readiness
    _auto_complete_works(c, user)
    other = Driver(c, user.headers, "simple")
    other.start()
    assert other.post("/status", {"status": "paused"})["status"] == "paused"

    # When it is switched on again, without a restart
    r.switch(monitoring_dashboard=True)

    # Then the whole feature is back, and the stale detector reports the idle contract
    _dashboard_feature_works(r, admin, user, other.id)
    run = r.stale_job.run()
    assert run is not None
    assert _stale_reports(database_url, d.id) == 1


def test_the_lambda_stale_detector_follows_the_flag(
    db: PooledDatabase, database_url: str, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the Lambda job's environment (no AppConfig: the settings' flags), and an idle contract
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name in ("DB_SECRET_ARN", "DB_HOST", "APPCONFIG_APPLICATION"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(create_app(db)) as client:
        d = Driver(client, make_caller().headers, "simple")
    _idle(database_url, d.id, hours=2)
    runtime.reset()
    try:
        # When the flag is off, a run does nothing
        monkeypatch.setenv("MAKIMA_FEATURE_FLAGS__MONITORING_DASHBOARD", "false")
        get_settings.cache_clear()
        assert scheduled.stale_detector(runtime.get_database()) == {
            "skipped": "feature_disabled",
            "feature": "monitoring_dashboard",
        }
        assert _stale_reports(database_url, d.id) == 0

        # And when it is on, the next run reports the contract (the flag is read per run)
        monkeypatch.setenv("MAKIMA_FEATURE_FLAGS__MONITORING_DASHBOARD", "true")
        get_settings.cache_clear()
        monkeypatch.setattr(scheduled, "_publisher", lambda: _NullPublisher())
        assert scheduled.stale_detector(runtime.get_database())["reported"] >= 1
        assert _stale_reports(database_url, d.id) == 1
    finally:
        runtime.reset()
        get_settings.cache_clear()


class _NullPublisher:
    def publish(self, events: Any) -> None:
        pass


def test_auto_complete_off_at_runtime_turns_off_its_whole_feature_and_nothing_else(
    running: Running, make_caller: Callable[..., Caller], database_url: str
) -> None:
    r, c = running, running.client
    admin, user = make_caller(role=Role.ADMIN), make_caller()

    # Given the feature on
    _auto_complete_works(c, user)

    # When the operator switches auto_complete off
    r.switch(auto_complete=False)

    # Then a met gate advances nothing, whether met by a deliverable or by a finished task
    d = Driver(c, user.headers, "simple")
    d.post("/status", {"status": "active"})
    assert d.deliver("plan-document")["phase"] == "plan"
    d.start()
    d.finish(d.task("extra"))
    assert d.get()["phase"] == "plan"
    # And the completion endpoints answer FEATURE_DISABLED, the switch left as it was
    for method, suffix, body in (
        ("GET", "/phase-readiness", None),
        ("POST", "/check-completion", {}),
        ("PUT", "/auto-complete", {"enabled": False}),
    ):
        _disabled(c.request(method, d.url(suffix), json=body, headers=user.headers), "auto_complete")
    assert d.get()["auto_complete_enabled"] is True
    # And a manual move through the phases completes the contract as before (no auto-completion needed)
    d.post("/phase", {"phase": "execute", "expected_version": d.get()["version"]})
    d.deliver("implementation")
    d.deliver("pull-request")
    assert d.get()["status"] == "active", "auto_complete is off: the met terminal gate completes nothing"
    assert d.post("/status", {"status": "completed"})["status"] == "completed"
    # And the other features are untouched: the dashboard, metrics, batch and the monitor
    _dashboard_feature_works(r, admin, user, d.id)

    # When it is switched on again, the feature is back without a restart
    r.switch(auto_complete=True)
    _auto_complete_works(c, user)


def test_the_flags_file_is_reread_after_max_age_and_a_bad_file_keeps_the_last_good_flags(tmp_path: Path) -> None:
    # Given a flags file read through a controllable clock, re-read every 5 s
    now = [0.0]
    path = tmp_path / "flags.toml"
    path.write_text("[feature_flags]\nauto_complete = false\n", encoding="utf-8")
    values = LocalFlagValues(FeatureFlagsConfig(), path, max_age=5, clock=lambda: now[0])
    assert values.current().auto_complete is False
    assert values.current().monitoring_dashboard is True  # keys the file does not name keep the settings'

    # When the file changes, the change is seen only once max_age has passed
    path.write_text("[feature_flags]\nauto_complete = true\n", encoding="utf-8")
    now[0] = 4.9
    assert values.current().auto_complete is False
    now[0] = 5.0
    assert values.current().auto_complete is True

    # And a file that does not parse, or names no flag we know, changes nothing
    for bad in ("[feature_flags\n", "[feature_flags]\nauto_complet = false\n", "[feature_flags]\nauto_complete = 3\n"):
        path.write_text(bad, encoding="utf-8")
        now[0] += 5
        assert values.current().auto_complete is True, bad
    # And a removed file means the settings' values
    path.unlink()
    now[0] += 5
    assert values.current() == FeatureFlagsConfig()
    # And through Powertools, evaluated per call
    flags = build_flags(Settings(flags_file=str(path), flags_max_age=0))
    assert flags.enabled(Flag.AUTO_COMPLETE) is True
    path.write_text("[feature_flags]\nauto_complete = false\n", encoding="utf-8")
    assert flags.enabled(Flag.AUTO_COMPLETE) is False


def test_the_aws_monitor_follows_the_flag(
    aws: Aws,  # noqa: F811 - the fixture imported above
    db: PooledDatabase,
    make_caller: Callable[..., Caller],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the monitor functions reading a flags file (AppConfig's stand-in here), and an open monitor
    flags_file = tmp_path / "flags.toml"
    monkeypatch.setenv("MAKIMA_FLAGS_FILE", str(flags_file))
    monkeypatch.setenv("MAKIMA_FLAGS_MAX_AGE", "0")
    get_settings.cache_clear()
    websocket.flags.cache_clear()
    try:
        owner = make_caller()
        subscribe(owner, "conn-open")

        # When monitoring_dashboard is switched off
        flags_file.write_text("[feature_flags]\nmonitoring_dashboard = false\n", encoding="utf-8")

        # Then $connect refuses with FEATURE_DISABLED (API Gateway refuses the handshake)
        refused = connect(owner, "conn-new")
        assert refused["statusCode"] == 404
        assert json.loads(refused["body"])["error"]["code"] == "FEATURE_DISABLED"
        # And a message on the open connection is answered with the error, and changes nothing
        answer = json.loads(send("conn-open", {"contract_ids": []})["body"])
        assert (answer["type"], answer["code"]) == ("error", "FEATURE_DISABLED")
        # And the next event closes the open connection instead of reaching it
        new_contract(db, owner, "while off")
        assert drain_to_bus(db) >= 1
        results = broadcast(aws.published())
        assert sum(r.get("closed", 0) for r in results) == 1
        assert all(r.get("disabled") for r in results)
        with transaction(db) as conn:
            assert monitor_sql.get_connection(conn, "conn-open") is None
        assert posted("conn-open") == []

        # When it is switched on again, monitors connect and get events again
        flags_file.write_text("[feature_flags]\nmonitoring_dashboard = true\n", encoding="utf-8")
        subscribe(owner, "conn-back")
        new_contract(db, owner, "back on")
        drain_to_bus(db)
        broadcast(aws.published())
        assert [m["type"] for m in posted("conn-back")] == ["contract_created"]
    finally:
        with transaction(db) as conn:  # other tests count the connections: leave none behind
            monitor_sql.remove_connections(conn, ["conn-open", "conn-new", "conn-back"])
        get_settings.cache_clear()
        websocket.flags.cache_clear()
