"""Issue 16: every owner action takes an optional ``expected_version``. A stale one is refused with 409
VERSION_CONFLICT (carrying the current version) and changes nothing; the current one is accepted; none
at all is the behaviour of the clients from before it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller
from tests.drivers import Driver

pytestmark = pytest.mark.integration
API = "/api/v1"


def _contract(client: TestClient, user: Caller) -> tuple[Driver, int]:
    """An active contract (its supervisor started), and its version now."""
    d = Driver(client, user.headers, "simple", auto_complete_enabled=False)
    d.start()
    return d, int(d.get()["version"])


def _refused(r: Any, actual: int) -> None:
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "VERSION_CONFLICT"
    assert err["details"]["actual"] == actual


def test_a_stale_answer_is_refused_and_the_question_stays_pending(client: TestClient, user: Caller) -> None:
    # Given a contract waiting for its question's answer
    d, _ = _contract(client, user)
    q = d.post("/questions", {"question": "which db?"}, expect=201)
    waiting = d.get()
    assert waiting["status"] == "waiting_for_input"
    events = len(d.events())
    # When the owner answers with the version from before the question
    r = client.post(
        d.url(f"/questions/{q['id']}/answer"),
        json={"answer": "postgres", "expected_version": waiting["version"] - 1},
        headers=user.headers,
    )
    # Then 409, and the question, the contract and the log are as they were
    _refused(r, waiting["version"])
    pending = client.get(d.url("/questions"), params={"status": "pending"}, headers=user.headers).json()
    assert [x["id"] for x in pending["questions"]] == [q["id"]]
    assert d.get() == waiting
    assert len(d.events()) == events
    # And the current version is accepted
    ok = d.post(f"/questions/{q['id']}/answer", {"answer": "postgres", "expected_version": waiting["version"]})
    assert ok["status"] == "answered"
    assert d.get()["status"] == "active"


def test_a_stale_supervisor_restart_is_refused(client: TestClient, user: Caller) -> None:
    d, version = _contract(client, user)
    events = len(d.events())
    r = client.post(d.url("/supervisor/restart"), json={"expected_version": version + 1}, headers=user.headers)
    _refused(r, version)
    status = client.get(d.url("/supervisor/status"), headers=user.headers).json()
    assert status["restart_requested"] is False
    assert len(d.events()) == events
    ok = d.post("/supervisor/restart", {"reason": "stuck", "expected_version": version})
    assert ok["restart_requested"] is True


def test_a_stale_auto_complete_switch_is_refused(client: TestClient, user: Caller) -> None:
    d, version = _contract(client, user)
    url = d.url("/auto-complete")
    r = client.put(url, json={"enabled": True, "expected_version": version - 1}, headers=user.headers)
    _refused(r, version)
    assert d.get()["auto_complete_enabled"] is False
    assert d.get()["version"] == version
    ok = client.put(url, json={"enabled": True, "expected_version": version}, headers=user.headers)
    assert ok.status_code == 200, ok.text
    assert (ok.json()["auto_complete_enabled"], ok.json()["version"]) == (True, version + 1)


def test_a_stale_deliverable_mark_is_refused(client: TestClient, user: Caller) -> None:
    d, version = _contract(client, user)
    url = d.url("/deliverables")
    body = {"deliverable_id": "plan-document"}
    r = client.post(url, json=body | {"expected_version": version - 1}, headers=user.headers)
    _refused(r, version)
    done = client.get(url, headers=user.headers).json()
    assert not any(x["completed"] for p in done["phases"] for x in p["deliverables"])
    ok = d.post("/deliverables", body | {"expected_version": version})
    assert (ok["deliverable_id"], ok["already_completed"]) == ("plan-document", False)


def test_a_stale_confirmed_completion_is_refused(client: TestClient, user: Caller) -> None:
    # Given a contract in its last phase with every requirement met, waiting for the owner's yes
    d, _ = _contract(client, user)
    for deliverable in ("plan-document",):
        d.deliver(deliverable)
    moved = d.post("/phase", {"phase": "execute", "expected_version": d.get()["version"], "force": True})
    for deliverable in ("implementation", "pull-request"):
        d.deliver(deliverable)
    version = int(moved["version"])
    assert d.post("/check-completion")["would_complete"] is True
    # When the owner confirms with a version from before the move
    r = client.post(
        d.url("/check-completion"), json={"confirmed": True, "expected_version": version - 1}, headers=user.headers
    )
    # Then 409 and it is not completed; with the current version it is
    _refused(r, version)
    assert d.get()["status"] == "active"
    ok = d.post("/check-completion", {"confirmed": True, "expected_version": version})
    assert ok["completed"] is True


@pytest.mark.parametrize("bad", [0, -1, True, 2_147_483_648])
def test_an_expected_version_that_is_no_version_is_a_validation_error(
    client: TestClient, user: Caller, bad: Any
) -> None:
    d, _ = _contract(client, user)
    r = client.put(d.url("/auto-complete"), json={"enabled": True, "expected_version": bad}, headers=user.headers)
    assert r.status_code in (400, 422), r.text
    assert d.get()["auto_complete_enabled"] is False


def test_without_expected_version_the_actions_work_as_before(client: TestClient, user: Caller) -> None:
    d, _ = _contract(client, user)
    q = d.post("/questions", {"question": "ok?"}, expect=201)
    assert d.post(f"/questions/{q['id']}/answer", {"answer": "yes"})["status"] == "answered"
    assert d.post("/deliverables", {"deliverable_id": "plan-document"})["already_completed"] is False
    assert client.put(d.url("/auto-complete"), json={"enabled": True}, headers=user.headers).status_code == 200
    assert d.post("/supervisor/restart")["restart_requested"] is True
