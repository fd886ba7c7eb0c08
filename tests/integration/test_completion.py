"""Seed Phase 2 over the API against the real database: readiness, auto-advance, completion, the
per-contract switch, the settings and the feature flags."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import ContractsConfig, FeatureFlagsConfig, Settings
from makima.db.connection import PooledDatabase
from makima.domain.contract_types import builtin_types
from makima.services import contracts as contracts_svc
from makima.services.completion import CompletionPolicy
from tests.conftest import Caller
from tests.drivers import Driver

pytestmark = pytest.mark.integration
API = "/api/v1"


def app_client(db: PooledDatabase, **sections: Any) -> TestClient:
    return TestClient(create_app(db, settings=Settings(**sections)), raise_server_exceptions=False)


TYPES = {t.name: t for t in builtin_types()}


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_readiness_of_every_phase_of_every_builtin_type(type_name: str, client: TestClient, user: Caller) -> None:
    ctype = TYPES[type_name]
    d = Driver(client, user.headers, type_name, auto_complete_enabled=False)
    d.start()
    for i, phase in enumerate(ctype.phases):
        r = d.readiness()
        assert (r["phase"], r["ready"], r["status"], r["auto_advance_enabled"]) == (phase.id, False, "not_ready", False)
        assert r["missing"] == [f"Deliverable: {x.id}" for x in phase.deliverables]
        assert r["next_phase"] == (ctype.phases[i + 1].id if i + 1 < len(ctype.phases) else None)
        tid = d.task(f"{phase.id}-work")
        for x in phase.deliverables:
            d.deliver(x.id)
        assert d.readiness()["missing"] == [f"1 task incomplete: {phase.id}-work"]
        d.finish(tid)
        expected = ["1 question unanswered"] if phase.gate and phase.gate.validator == "no_pending_questions" else []
        if expected:
            q = d.post("/questions", {"question": "ok?"}, expect=201)
            assert d.readiness()["missing"] == expected
            d.post(f"/questions/{q['id']}/answer", {"answer": "yes"})
        assert d.readiness() | {"next_phase": None} == {
            "phase": phase.id,
            "ready": True,
            "status": "ready",
            "missing": [],
            "auto_advance_enabled": False,
            "next_phase": None,
        }
        # auto-complete is off for this contract: nothing moved by itself
        assert d.get()["phase"] == phase.id
        if i + 1 < len(ctype.phases):
            d.post("/phase", {"phase": ctype.phases[i + 1].id, "expected_version": d.get()["version"]})


def test_full_automatic_run_without_phase_guard(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "specification")
    d.start()
    for phase in TYPES["specification"].phases:
        assert d.get()["phase"] == phase.id
        tid = d.task(f"{phase.id}-work")
        for x in phase.deliverables:
            d.deliver(x.id)
        assert d.get()["phase"] == phase.id  # the task is still open
        d.finish(tid)
    final = d.get()
    assert (final["status"], final["phase"]) == ("completed", "review")
    assert final["completion_detected_at"]
    types = [e["type"] for e in d.events()]
    assert types.count("phase_changed") == 4
    assert types[-4:] == ["completion_detected", "status_changed", "cleanup_completed", "status_changed"]
    statuses = [
        (e["payload"]["old_status"], e["payload"]["new_status"]) for e in d.events() if e["type"] == "status_changed"
    ]
    assert statuses[-2:] == [("active", "completing"), ("completing", "completed")]
    # the supervisor task was closed by the cleanup
    tasks = client.get(d.url("/tasks"), headers=user.headers).json()["tasks"]
    assert all(t["status"] == "completed" for t in tasks)


def test_phase_guard_stops_at_each_phase_until_confirmed(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "simple", phase_guard=True)
    d.start()
    d.deliver("plan-document")
    waiting = d.get()
    assert (waiting["status"], waiting["waiting_for"], waiting["phase"]) == (
        "waiting_for_input",
        "phase_confirmation:execute",
        "plan",
    )
    assert "phase_ready" in [e["type"] for e in d.events()]
    # the guard holds for every caller: without confirmation the phase change is refused
    d.post("/phase", {"phase": "execute", "expected_version": waiting["version"]}, expect=409)
    moved = d.post("/phase", {"phase": "execute", "expected_version": waiting["version"], "confirmed": True})
    assert (moved["status"], moved["phase"], moved["waiting_for"]) == ("active", "execute", None)
    d.deliver("implementation")
    d.deliver("pull-request")
    held = d.get()
    assert (held["status"], held["waiting_for"]) == ("waiting_for_input", "completion_confirmation")
    check = d.post("/check-completion", {})
    # a check: it could complete now (would_complete) but changes nothing without confirmed
    assert (check["ready"], check["would_complete"], check["completed"]) == (True, True, False)
    assert d.get()["status"] == "waiting_for_input"
    done = d.post("/check-completion", {"confirmed": True})
    assert (done["completed"], done["contract"]["status"]) == (True, "completed")


def test_concurrent_deliverables_in_the_terminal_phase_both_land(db: PooledDatabase, user: Caller) -> None:
    c = contracts_svc.create_contract(
        db, user.principal, name="race", description="", contract_type="simple", phase_guard=False
    )
    from makima.services import tasks as tasks_svc

    tasks_svc.spawn_task(db, user.principal, c.id, name="supervisor", is_supervisor=True)
    contracts_svc.change_phase(db, user.principal, c.id, phase="execute", expected_version=2, force=True)
    policy = CompletionPolicy(auto_complete=False, auto_advance_phases=True)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def mark(deliverable: str) -> None:
        barrier.wait()
        try:
            contracts_svc.complete_deliverable(db, user.principal, c.id, deliverable_id=deliverable, policy=policy)
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    # execute is the terminal phase of "simple": with completion off, nothing must happen twice either
    threads = [threading.Thread(target=mark, args=(x,)) for x in ("implementation", "pull-request")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    events = contracts_svc.list_events(db, user.principal, c.id, limit=1000).items
    assert [e.type for e in events].count("deliverable_completed") == 2


def test_racing_deliverables_advance_a_phase_exactly_once(db: PooledDatabase, user: Caller) -> None:
    from makima.services import tasks as tasks_svc

    for _ in range(5):
        c = contracts_svc.create_contract(
            db, user.principal, name="race", description="", contract_type="specification", phase_guard=False
        )
        tasks_svc.spawn_task(db, user.principal, c.id, name="supervisor", is_supervisor=True)
        contracts_svc.change_phase(db, user.principal, c.id, phase="specify", expected_version=2, force=True)
        policy = CompletionPolicy()
        barrier = threading.Barrier(2)

        def mark(
            deliverable: str, contract_id: Any = c.id, barrier: threading.Barrier = barrier, policy: Any = policy
        ) -> None:
            barrier.wait()
            contracts_svc.complete_deliverable(
                db, user.principal, contract_id, deliverable_id=deliverable, policy=policy
            )

        threads = [threading.Thread(target=mark, args=(x,)) for x in ("requirements-document", "acceptance-criteria")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = contracts_svc.get_contract(db, user.principal, c.id).contract
        assert after.phase == "plan"
        events = contracts_svc.list_events(db, user.principal, c.id, limit=1000).items
        auto = [e for e in events if e.type == "phase_changed" and e.payload.get("auto")]
        assert [(e.payload["old_phase"], e.payload["new_phase"]) for e in auto] == [("specify", "plan")]


def test_auto_complete_can_be_switched_off_per_contract(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "simple")
    d.start()
    r = client.put(d.url("/auto-complete"), json={"enabled": False}, headers=user.headers)
    assert (r.status_code, r.json()["auto_complete_enabled"]) == (200, False)
    d.deliver("plan-document")
    assert d.get()["phase"] == "plan"
    assert d.readiness()["ready"] is True
    client.put(d.url("/auto-complete"), json={"enabled": True}, headers=user.headers)
    d.post("/phase", {"phase": "execute", "expected_version": d.get()["version"]})
    d.deliver("implementation")
    assert d.get()["status"] == "active"
    client.put(d.url("/auto-complete"), json={"enabled": False}, headers=user.headers)
    d.deliver("pull-request")
    check = d.post("/check-completion")
    assert (check["ready"], check["would_complete"], check["missing"]) == (True, True, [])
    assert d.get()["status"] == "active"  # the check changed nothing
    assert d.post("/check-completion", {"confirmed": True})["contract"]["status"] == "completed"


def test_check_completion_lists_what_is_missing(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "simple", auto_complete_enabled=False)
    d.start()
    check = d.post("/check-completion")
    assert check["ready"] is False
    assert check["missing"] == ["Phase: in plan; the contract completes in execute", "Deliverable: plan-document"]


def test_paused_contracts_do_not_move(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "simple")
    d.start()
    d.post("/status", {"status": "paused", "reason": "hold"})
    d.deliver("plan-document")
    assert (d.get()["status"], d.get()["phase"]) == ("paused", "plan")
    # on resume the next qualifying change moves it
    d.post("/status", {"status": "active"})
    tid = d.task("nudge")
    d.finish(tid)
    assert d.get()["phase"] == "execute"


@pytest.fixture
def no_phase_advance(db: PooledDatabase) -> Iterator[TestClient]:
    with app_client(db, contracts=ContractsConfig(auto_advance_phases=False)) as c:
        yield c


def test_setting_auto_advance_phases_off_keeps_phases_but_still_completes(
    no_phase_advance: TestClient, user: Caller
) -> None:
    d = Driver(no_phase_advance, user.headers, "simple")
    d.start()
    d.deliver("plan-document")
    assert d.get()["phase"] == "plan"
    assert d.readiness()["auto_advance_enabled"] is False
    d.post("/phase", {"phase": "execute", "expected_version": d.get()["version"]})
    d.deliver("implementation")
    d.deliver("pull-request")
    assert d.get()["status"] == "completed"


@pytest.fixture
def flags_off(db: PooledDatabase) -> Iterator[TestClient]:
    flags = FeatureFlagsConfig(auto_complete=False, enhanced_contract_status=False)
    with app_client(db, feature_flags=flags) as c:
        yield c


def test_auto_complete_flag_off_disables_the_feature_cleanly(flags_off: TestClient, user: Caller) -> None:
    d = Driver(flags_off, user.headers, "simple")
    assert d.get()["status"] == "active"  # enhanced statuses are off too: contracts start active
    d.deliver("plan-document")
    assert d.get()["phase"] == "plan"  # no auto-advance
    for method, suffix, body in (
        ("GET", "/phase-readiness", None),
        ("POST", "/check-completion", {}),
        ("PUT", "/auto-complete", {"enabled": False}),
    ):
        r = flags_off.request(method, d.url(suffix), json=body, headers=user.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "FEATURE_DISABLED")
        assert r.json()["error"]["details"] == {"feature": "auto_complete"}
    assert d.get()["auto_complete_enabled"] is True  # the PUT did not half-run


def test_enhanced_status_flag_off_allows_only_the_original_statuses(flags_off: TestClient, user: Caller) -> None:
    d = Driver(flags_off, user.headers, "simple")
    r = flags_off.post(d.url("/status"), json={"status": "paused"}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "FEATURE_DISABLED")
    assert d.get()["status"] == "active"  # as before the enhanced statuses
    assert d.post("/status", {"status": "completed"})["status"] == "completed"
    assert d.post("/status", {"status": "archived"})["status"] == "archived"


def test_flags_come_from_the_settings_toml(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "makima.toml"
    toml.write_text(
        "[contracts]\nstale_threshold_minutes = 45\nauto_advance_phases = false\n\n"
        "[feature_flags]\nauto_complete = false\n"
    )
    monkeypatch.setenv("MAKIMA_CONFIG", str(toml))
    monkeypatch.setenv("MAKIMA_CONTRACTS__HEARTBEAT_INTERVAL_SECONDS", "10")
    s = Settings()
    assert (s.contracts.stale_threshold_minutes, s.contracts.auto_advance_phases) == (45, False)
    assert s.contracts.heartbeat_interval_seconds == 10  # the environment wins over the file
    assert s.feature_flags.auto_complete is False
    assert s.feature_flags.supervisor_heartbeat is True
    from makima.flags import Flag, build_flags

    flags = build_flags(s)
    assert flags.enabled(Flag.AUTO_COMPLETE) is False
    assert flags.enabled(Flag.MONITORING_DASHBOARD) is True


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("MAKIMA_CONTRACTS__HEARTBEAT_TIMEOUT_SECONDS", "40")
    with pytest.raises(ValidationError, match="at least twice"):
        Settings()


def test_answering_the_last_pending_question_can_satisfy_a_gate(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "specification")
    d.start()
    d.deliver("research-notes")
    assert d.get()["phase"] == "specify"
    q = d.post("/questions", {"question": "Which auth provider?"}, expect=201)
    d.deliver("requirements-document")
    d.deliver("acceptance-criteria")
    held = d.get()
    assert (held["phase"], held["status"]) == ("specify", "waiting_for_input")
    assert d.readiness()["missing"] == ["1 question unanswered"]
    d.post(f"/questions/{q['id']}/answer", {"answer": "OIDC"})
    moved = d.get()
    assert (moved["phase"], moved["status"]) == ("plan", "active")
