"""Issue 17: the contract guarantees as they hold in operation, against the real database.

- Phase requirements (seed 1.2/2.1): a phase change passes the current phase's gate, enters only the
  next phase, or is ``400 VALIDATION_FAILED`` with ``missing_requirements`` and changes nothing; a person
  may force it, recorded in the event; the phase guard holds on top.
- One request moves the version by exactly one, on every multi-step path.
- The ``enhanced_contract_status`` flag switched at runtime turns the whole feature off, and on again.
- Backwards compatibility: the original moves, and the legacy view (``X-Makima-Status: legacy``).
- The smaller drift: check-completion is a check, resume advances, stale_duration, users' own cleanup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import Settings
from makima.db.connection import PooledDatabase
from makima.domain.principals import Role
from makima.services import contracts as contracts_svc
from makima.services import tasks as tasks_svc
from makima.services.stale import detect_stale_contracts
from tests.conftest import Caller
from tests.drivers import Driver

pytestmark = pytest.mark.integration
API = "/api/v1"
LEGACY = {"X-Makima-Status": "legacy"}


def _phase(d: Driver, phase: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    """POST …/phase at the contract's current version; the raw response."""
    version = d.get()["version"]
    return d.client.post(
        d.url("/phase"), json={"phase": phase, "expected_version": version, **body}, headers=headers or d.headers
    )


def _error(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


# --- item 4: phase requirements -------------------------------------------------------------------------


def test_a_phase_change_needs_the_current_phase_gate_met(client: TestClient, user: Caller) -> None:
    # Given a started contract whose plan phase is not done (auto-advance off: only manual moves)
    d = Driver(client, user.headers, "simple", auto_complete_enabled=False)
    d.start()
    before, events = d.get(), d.events()

    # When it is moved on anyway
    r = _phase(d, "execute")

    # Then it is refused with the readiness list, and nothing changed
    assert _error(r) == (400, "VALIDATION_FAILED")
    details = r.json()["error"]["details"]
    assert details["missing_requirements"] == d.readiness()["missing"] == ["Deliverable: plan-document"]
    assert (details["current_phase"], details["target_phase"], details["next_phase"]) == ("plan", "execute", "execute")
    assert d.get() == before
    assert d.events() == events

    # When the gate is met, then the same move goes through, not forced
    d.deliver("plan-document")
    moved = _phase(d, "execute")
    assert moved.status_code == 200, moved.text
    assert (moved.json()["phase"], moved.json()["version"]) == ("execute", before["version"] + 1)
    event = d.events()[-1]
    assert (event["type"], event["payload"]["forced"]) == ("phase_changed", False)
    assert "missing_requirements" not in event["payload"]


def test_a_phase_cannot_be_skipped_nor_gone_back_without_force(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "specification", auto_complete_enabled=False)
    d.deliver("research-notes")  # research's gate is met

    skip = _phase(d, "plan")
    assert _error(skip) == (400, "VALIDATION_FAILED")
    assert skip.json()["error"]["details"]["next_phase"] == "specify"
    assert skip.json()["error"]["details"]["missing_requirements"] == [
        "Phase: specify comes next; plan cannot be entered before it"
    ]
    assert _phase(d, "specify").status_code == 200

    back = _phase(d, "research")
    assert _error(back) == (400, "VALIDATION_FAILED")
    assert back.json()["error"]["details"]["missing_requirements"] == [
        "Phase: research comes before specify; moving back needs force"
    ]
    assert d.get()["phase"] == "specify"


def test_the_owner_may_force_and_the_event_says_so(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "specification", auto_complete_enabled=False)
    version = d.get()["version"]

    r = _phase(d, "plan", force=True, reason="research done elsewhere")

    assert r.status_code == 200, r.text
    assert (r.json()["phase"], r.json()["version"]) == ("plan", version + 1)
    payload = d.events()[-1]["payload"]
    assert payload["forced"] is True
    assert payload["missing_requirements"] == [
        "Deliverable: research-notes",
        "Phase: specify comes next; plan cannot be entered before it",
    ]
    back = _phase(d, "research", force=True)
    assert back.status_code == 200, back.text
    assert d.events()[-1]["payload"]["missing_requirements"] == [
        "Phase: research comes before plan; moving back needs force"
    ]


def test_a_daemon_token_may_not_force(client: TestClient, user: Caller, make_caller: Callable[..., Caller]) -> None:
    daemon = make_caller(daemon_for=user)
    d = Driver(client, user.headers, "simple", auto_complete_enabled=False)
    before = d.get()

    forced = _phase(d, "execute", headers=daemon.headers, force=True)
    plain = _phase(d, "execute", headers=daemon.headers)

    assert _error(forced) == (403, "FORBIDDEN")
    assert _error(plain) == (400, "VALIDATION_FAILED")
    assert plain.json()["error"]["details"]["force_allowed"] is False
    assert d.get() == before


def test_the_phase_guard_still_applies_on_top_of_force(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "simple", phase_guard=True, auto_complete_enabled=False)

    assert _error(_phase(d, "execute", force=True)) == (409, "PHASE_GUARD_REQUIRED")
    assert d.get()["phase"] == "plan"
    ok = _phase(d, "execute", force=True, confirmed=True)
    assert ok.status_code == 200, ok.text
    payload = d.events()[-1]["payload"]
    assert (payload["confirmed"], payload["forced"]) == (True, True)


# --- item 12: one request, one version ------------------------------------------------------------------


def test_a_confirmed_phase_change_out_of_waiting_for_input_moves_the_version_by_one(
    client: TestClient, user: Caller
) -> None:
    d = Driver(client, user.headers, "simple", phase_guard=True)
    d.start()
    d.deliver("plan-document")
    waiting = d.get()
    assert (waiting["status"], waiting["waiting_for"]) == ("waiting_for_input", "phase_confirmation:execute")

    moved = _phase(d, "execute", confirmed=True)

    assert (moved.json()["phase"], moved.json()["status"]) == ("execute", "active")
    assert moved.json()["version"] == waiting["version"] + 1
    assert d.get()["version"] == waiting["version"] + 1


def test_an_auto_advance_chain_moves_the_version_by_one(client: TestClient, user: Caller) -> None:
    # Given the deliverables of three later phases recorded ahead of time
    d = Driver(client, user.headers, "specification")
    d.start()
    for phase, deliverable in (
        ("specify", "requirements-document"),
        ("specify", "acceptance-criteria"),
        ("plan", "plan-document"),
        ("execute", "implementation"),
        ("execute", "tests"),
    ):
        d.post("/deliverables", {"deliverable_id": deliverable, "phase": phase})
    before = d.get()

    # When research's last deliverable lands, four phases advance in that one request
    after = d.deliver("research-notes")

    assert after["phase"] == "review"
    assert [e["type"] for e in d.events()].count("phase_changed") == 4
    assert after["version"] == before["version"] + 1


def test_the_completion_flow_moves_the_version_by_one(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "simple")
    d.start()
    d.deliver("plan-document")
    d.deliver("implementation")
    before = d.get()

    after = d.deliver("pull-request")  # completing → cleanup → completed, in one request

    assert after["status"] == "completed"
    statuses = [e["payload"]["new_status"] for e in d.events() if e["type"] == "status_changed"]
    assert statuses[-2:] == ["completing", "completed"]
    assert after["version"] == before["version"] + 1


def test_an_answer_that_satisfies_the_gate_moves_the_version_by_one(client: TestClient, user: Caller) -> None:
    # Given a contract in its last phase, all delivered, waiting for one answer
    d = Driver(client, user.headers, "simple")
    d.start()
    d.deliver("plan-document")
    q = d.post("/questions", {"question": "Ship it?"}, expect=201)
    d.deliver("implementation")
    d.deliver("pull-request")
    before = d.get()
    assert before["status"] == "waiting_for_input"

    # When the owner answers: waiting → active, the gate is met, completing → completed
    d.post(f"/questions/{q['id']}/answer", {"answer": "yes"})

    after = d.get()
    assert after["status"] == "completed"
    assert after["version"] == before["version"] + 1


def test_a_batch_resume_that_advances_moves_each_contract_by_one(
    client: TestClient, user: Caller, admin_caller: Caller
) -> None:
    # Given three paused contracts whose plan phase got done while paused (one batch transaction, a
    # savepoint each: resumed, then advanced by the gate, two steps per contract)
    drivers = [Driver(client, user.headers, "simple") for _ in range(3)]
    for d in drivers:
        d.start()
        d.post("/status", {"status": "paused", "reason": "hold"})
        d.deliver("plan-document")
    before = {d.id: d.get()["version"] for d in drivers}

    r = client.post(
        f"{API}/contracts/batch",
        json={"operation": "resume_all", "contract_ids": [d.id for d in drivers]},
        headers=admin_caller.headers,
    )

    assert r.status_code == 200, r.text
    after = {d.id: d.get() for d in drivers}
    assert {k: (c["status"], c["phase"]) for k, c in after.items()} == dict.fromkeys(before, ("active", "execute"))
    assert {k: c["version"] for k, c in after.items()} == {k: v + 1 for k, v in before.items()}
    # and each later request bumps again: the rule is per transaction, not per contract
    d = drivers[0]
    d.post("/status", {"status": "paused"})
    d.post("/status", {"status": "active"})
    assert d.get()["version"] == before[d.id] + 3


# --- item 5: the enhanced_contract_status flag, switched at runtime -------------------------------------


@pytest.fixture
def switchable(db: PooledDatabase) -> Iterator[tuple[TestClient, Settings]]:
    """A running app whose feature flags a test switches while it serves (the local flag store reads the
    settings on every evaluation, as AppConfig's would change under a running Lambda)."""
    settings = Settings()
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as c:
        yield c, settings


def test_enhanced_statuses_switched_off_at_runtime_are_off_entirely_and_back_on(
    switchable: tuple[TestClient, Settings], user: Caller
) -> None:
    client, settings = switchable
    earlier = Driver(client, user.headers, "simple")  # created while the feature is on
    assert earlier.get()["status"] == "created"

    # When the flag is switched off on the running app
    settings.feature_flags.enhanced_contract_status = False

    # Then new contracts start active, as before the enhanced statuses
    d = Driver(client, user.headers, "simple", phase_guard=True)
    assert (d.get()["status"], d.get()["enhanced_status"]) == ("active", "active")
    # a question leaves the status alone (it is pending and listed)
    q = d.post("/questions", {"question": "Which provider?"}, expect=201)
    assert (d.get()["status"], d.get()["waiting_for"]) == ("active", None)
    assert [x["id"] for x in client.get(d.url("/questions"), headers=user.headers).json()["questions"]] == [q["id"]]
    d.post(f"/questions/{q['id']}/answer", {"answer": "OIDC"})
    # the enhanced statuses cannot be set
    assert _error(client.post(d.url("/status"), json={"status": "paused"}, headers=user.headers)) == (
        404,
        "FEATURE_DISABLED",
    )
    # a met gate under the phase guard does not park the contract in waiting_for_input
    d.deliver("plan-document")
    held = d.get()
    assert (held["status"], held["phase"]) == ("active", "plan")
    assert d.events()[-1]["type"] == "phase_ready"
    # the contract made while it was on shows a legacy status
    seen = earlier.get()
    assert (seen["status"], seen["enhanced_status"], seen["legacy_status"]) == ("active", "created", "active")
    # nothing else changed: gates, readiness and auto-advance still work
    assert d.readiness()["ready"] is True
    assert _error(_phase(d, "execute", confirmed=False)) == (409, "PHASE_GUARD_REQUIRED")
    free = Driver(client, user.headers, "simple")
    free.deliver("plan-document")
    free.deliver("implementation")
    done = free.deliver("pull-request")
    assert done["status"] == "completed"  # the completion flow, without the completing step
    statuses = [
        (e["payload"]["old_status"], e["payload"]["new_status"]) for e in free.events() if e["type"] == "status_changed"
    ]
    assert statuses == [("active", "completed")]

    # When it is switched on again, then the enhanced statuses are back
    settings.feature_flags.enhanced_contract_status = True
    again = Driver(client, user.headers, "simple")
    assert again.get()["status"] == "created"
    again.start()
    again.post("/questions", {"question": "Now?"}, expect=201)
    assert again.get()["status"] == "waiting_for_input"
    assert earlier.get()["status"] == "created"


def test_phase_requirements_follow_the_auto_complete_flag_at_runtime(
    switchable: tuple[TestClient, Settings], user: Caller
) -> None:
    client, settings = switchable
    d = Driver(client, user.headers, "specification", auto_complete_enabled=False)
    assert _error(_phase(d, "specify")) == (400, "VALIDATION_FAILED")

    # When auto_complete (Phase 2: gates, readiness, completion) is switched off, phase changes are free
    settings.feature_flags.auto_complete = False
    try:
        moved = _phase(d, "specify")
        assert moved.status_code == 200, moved.text
        assert d.events()[-1]["payload"]["forced"] is False
        assert _error(client.get(d.url("/phase-readiness"), headers=user.headers)) == (404, "FEATURE_DISABLED")
    finally:
        settings.feature_flags.auto_complete = True

    # And switched on again, the gate holds again
    assert _error(_phase(d, "plan")) == (400, "VALIDATION_FAILED")


# --- item 8: backwards compatibility --------------------------------------------------------------------


def test_the_original_status_moves_still_work(client: TestClient, user: Caller) -> None:
    archived = Driver(client, user.headers, "simple")
    archived.start()
    assert archived.post("/status", {"status": "archived"})["status"] == "archived"  # active → archived
    completed = Driver(client, user.headers, "simple")
    assert completed.post("/status", {"status": "completed"})["status"] == "completed"  # created → completed


def test_the_legacy_view_on_every_endpoint_that_returns_contracts(client: TestClient, user: Caller) -> None:
    old = {**user.headers, **LEGACY}
    # create, get, list, patch
    r = client.post(f"{API}/contracts", json={"name": "old client"}, headers=old)
    c = r.json()
    assert (r.status_code, c["status"], c["enhanced_status"]) == (201, "active", "created")
    cid = c["id"]
    assert client.get(f"{API}/contracts/{cid}", headers=old).json()["status"] == "active"
    listed = client.get(f"{API}/contracts", headers=old).json()["contracts"]
    assert {x["status"] for x in listed} <= {"active", "completed", "archived"}
    assert client.patch(f"{API}/contracts/{cid}", json={"name": "renamed"}, headers=old).json()["status"] == "active"
    # the supervisor starts it; pausing shows "active" to the old client, "paused" as enhanced_status
    r = client.post(f"{API}/contracts/{cid}/supervisor", json={}, headers=old)
    assert (r.status_code, r.json()["contract"]["status"]) == (201, "active"), r.text
    paused = client.post(f"{API}/contracts/{cid}/status", json={"status": "paused"}, headers=old).json()
    assert (paused["status"], paused["enhanced_status"]) == ("active", "paused")
    delivered = client.post(
        f"{API}/contracts/{cid}/deliverables", json={"deliverable_id": "plan-document"}, headers=old
    )
    assert delivered.json()["contract"]["status"] == "active"
    check = client.post(f"{API}/contracts/{cid}/check-completion", json={}, headers=old).json()
    assert check["contract"]["status"] == "active"
    auto = client.put(f"{API}/contracts/{cid}/auto-complete", json={"enabled": False}, headers=old).json()
    assert auto["status"] == "active"
    client.post(f"{API}/contracts/{cid}/status", json={"status": "active"}, headers=old)
    moved = client.post(
        f"{API}/contracts/{cid}/phase", json={"phase": "execute", "expected_version": auto["version"] + 1}, headers=old
    )
    assert (moved.status_code, moved.json()["status"]) == (200, "active"), moved.text
    # a new client asking nothing special sees the enhanced status
    assert client.get(f"{API}/contracts/{cid}", headers=user.headers).json()["status"] == "active"
    created = client.post(f"{API}/contracts", json={"name": "new client"}, headers=user.headers).json()
    assert created["status"] == created["enhanced_status"] == "created"


def test_legacy_status_filters_mean_what_they_meant(client: TestClient, make_caller: Callable[..., Caller]) -> None:
    me = make_caller()
    paused = Driver(client, me.headers, "simple")
    paused.start()
    paused.post("/status", {"status": "paused"})
    failed = Driver(client, me.headers, "simple")
    failed.post("/status", {"status": "failed", "reason": "x"})

    def listed(headers: dict[str, str], status: str) -> set[str]:
        r = client.get(f"{API}/contracts", params={"status": status}, headers=headers)
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["contracts"]}

    old = {**me.headers, **LEGACY}
    assert listed(old, "active") == {paused.id}
    assert listed(old, "completed") == {failed.id}
    assert listed(me.headers, "active") == set()
    assert listed(me.headers, "completed") == set()
    assert listed(old, "paused") == {paused.id}  # the new names keep their meaning


def test_an_unknown_status_view_is_refused(client: TestClient, user: Caller) -> None:
    r = client.get(f"{API}/contracts", headers={**user.headers, "X-Makima-Status": "ancient"})
    assert _error(r) == (422, "INVALID_REQUEST")


# --- item 13: check-completion, resume, stale_duration, users' own cleanup ------------------------------


def test_check_completion_changes_nothing_unless_confirmed(
    client: TestClient, db: PooledDatabase, user: Caller
) -> None:
    # Given an active contract whose last gate is met while nothing ran the auto-complete
    c = contracts_svc.create_contract(
        db, user.principal, name="ready", description="", contract_type="simple", phase_guard=False
    )
    tasks_svc.spawn_task(db, user.principal, c.id, name="supervisor", is_supervisor=True)
    contracts_svc.complete_deliverable(db, user.principal, c.id, deliverable_id="plan-document")
    contracts_svc.change_phase(db, user.principal, c.id, phase="execute", expected_version=2)
    for deliverable in ("implementation", "pull-request"):
        contracts_svc.complete_deliverable(db, user.principal, c.id, deliverable_id=deliverable)
    url = f"{API}/contracts/{c.id}"
    before = client.get(url, headers=user.headers).json()
    events = client.get(f"{url}/events", headers=user.headers).json()["events"]
    assert before["status"] == "active"

    # When it is checked
    check = client.post(f"{url}/check-completion", json={}, headers=user.headers).json()

    # Then the answer says it would complete, and nothing changed
    assert (check["ready"], check["would_complete"], check["completed"], check["missing"]) == (True, True, False, [])
    assert client.get(url, headers=user.headers).json() == before
    assert client.get(f"{url}/events", headers=user.headers).json()["events"] == events
    # and confirmed completes it
    done = client.post(f"{url}/check-completion", json={"confirmed": True}, headers=user.headers).json()
    assert (done["completed"], done["contract"]["status"]) == (True, "completed")


def test_resuming_a_contract_whose_gate_is_met_advances_it(client: TestClient, user: Caller) -> None:
    d = Driver(client, user.headers, "simple")
    d.start()
    d.post("/status", {"status": "paused", "reason": "hold"})
    d.deliver("plan-document")
    assert d.get()["phase"] == "plan"

    resumed = d.post("/status", {"status": "active"})

    assert (resumed["status"], resumed["phase"]) == ("active", "execute")
    assert d.events()[-1]["payload"].get("auto") is True


def test_stale_detected_carries_the_seeds_stale_duration(db: PooledDatabase, user: Caller, database_url: str) -> None:
    c = contracts_svc.create_contract(
        db, user.principal, name="idle", description="", contract_type="simple", phase_guard=False
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE contracts SET last_activity_at = now() - interval '2 hours' WHERE id = %s", (c.id,))

    detect_stale_contracts(db, timedelta(minutes=30))

    events = [e for e in contracts_svc.list_events(db, user.principal, c.id).items if e.type == "stale_detected"]
    assert len(events) == 1
    payload = events[0].payload
    assert 7190 <= payload["stale_duration"] <= 7300
    assert payload["stale_duration"] == payload["stale_duration_secs"]  # the old name, during the transition


def test_a_user_cleans_up_their_own_contracts_and_nothing_else(
    client: TestClient, make_caller: Callable[..., Caller], admin_caller: Caller
) -> None:
    me, other = make_caller(), make_caller()
    mine = Driver(client, me.headers, "simple")
    mine.post("/status", {"status": "completed"})
    theirs = Driver(client, other.headers, "simple")
    theirs.post("/status", {"status": "completed"})
    batch = f"{API}/contracts/batch"

    r = client.post(batch, json={"operation": "archive_old", "older_than_hours": 0}, headers=me.headers)

    assert r.status_code == 200, r.text
    assert r.json()["affected_ids"] == [mine.id]
    assert mine.get()["status"] == "archived"
    assert theirs.get()["status"] == "completed"
    # deleting their own archived ones too; another owner's ids are simply not matched
    r = client.post(
        batch,
        json={"operation": "cleanup_archived", "older_than_hours": 0, "contract_ids": [mine.id, theirs.id]},
        headers=me.headers,
    )
    assert r.json()["affected_ids"] == [mine.id]
    assert client.get(mine.url(), headers=me.headers).status_code == 404
    # the fleet-wide operations stay an admin's, and a daemon token runs none
    assert _error(client.post(batch, json={"operation": "pause_all"}, headers=me.headers)) == (403, "FORBIDDEN")
    daemon = make_caller(daemon_for=me)
    assert _error(
        client.post(batch, json={"operation": "archive_old", "older_than_hours": 0}, headers=daemon.headers)
    ) == (403, "FORBIDDEN")


@pytest.fixture
def admin_caller(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller(role=Role.ADMIN)
