"""The supervisor lifecycle over time against the local stack (``makima dev``), with the SDK's daemons
in this process talking HTTP to it, and the timeout sweep run on the stack's database with a clock of
the test's choosing (the stack's own scheduler runs it every minute on the real clock):

- a daemon stopped cleanly with five supervisors, then two hours: none is declared dead, and another
  daemon adopts and restores all five as ``clean``, and finishes their contracts;
- a supervisor killed on a daemon that lives on: it times out, the owner asks for a restart, and a live
  daemon adopts it (the SDK does on its own), restores it and finishes the contract.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from makima.client.api import MakimaApi
from makima.client.daemon import Daemon, Hosted
from makima.client.reference import ReferenceConfig, ReferenceSupervisor
from makima.db.connection import PooledDatabase
from makima.services import supervisors as supervisors_svc
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e
TIMEOUT = timedelta(seconds=120)  # the stack's [contracts] heartbeat_timeout_seconds


@dataclass
class Owner:
    http: httpx.Client
    person: MakimaApi
    daemons: MakimaApi
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code < 300, r.text
        return dict(r.json())

    def contract(self, name: str) -> str:
        body = {"name": name, "contract_type": "specification"}
        return str(self.ok(self.http.post("/contracts", json=body))["id"])

    def on_event(self, kind: str, fields: Mapping[str, Any]) -> None:
        with self.lock:
            self.events.append((kind, dict(fields)))

    def seen(self, kind: str, contract_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [f for k, f in self.events if k == kind and contract_id in (None, f["contract_id"])]

    def supervisor(self, contract_id: str, daemon: Daemon, *, restore: bool = False, **config: Any) -> Hosted:
        return ReferenceSupervisor(
            self.daemons,
            contract_id,
            daemon_id=daemon.id,
            restore=restore,
            config=ReferenceConfig(own_heartbeats=False, **{"step_delay": 0.05, **config}),
            on_event=self.on_event,
        )


@pytest.fixture
def owner(stack: Stack) -> Iterator[Owner]:
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"lifecycle-{uuid.uuid4().hex[:8]}"}).json()
        person = admin.post(f"/users/{user['id']}/tokens", json={"kind": "user"}).json()["token"]
        daemon = admin.post(f"/users/{user['id']}/tokens", json={"kind": "daemon"}).json()["token"]
    with stack.client(person) as http:
        o = Owner(http, MakimaApi(stack.base_url, person), MakimaApi(stack.base_url, daemon))
        try:
            yield o
        finally:
            o.person.close()
            o.daemons.close()


@pytest.fixture
def stack_db(stack: Stack) -> Iterator[PooledDatabase]:
    db = PooledDatabase(stack.database_url(), min_size=1, max_size=2)
    try:
        yield db
    finally:
        db.close()


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def sweep(db: PooledDatabase, at: datetime) -> set[str]:
    return {str(r["task_id"]) for r in supervisors_svc.detect_dead_supervisors(db, TIMEOUT, now=at)}


def restores(owner: Owner, contract_id: str) -> list[dict[str, Any]]:
    events = owner.ok(owner.http.get(f"/contracts/{contract_id}/events", params={"limit": 1000}))["events"]
    return [e["payload"] for e in events if e["type"] == "supervisor_restored"]


def test_a_daemon_stopped_cleanly_with_five_supervisors_comes_back_clean_on_another(
    stack: Stack, owner: Owner, stack_db: PooledDatabase
) -> None:
    # Given a daemon running five supervisors, each some way into its contract
    contracts = [owner.contract(f"clean stop {i}") for i in range(5)]
    a = Daemon(owner.daemons, f"stopping-{uuid.uuid4().hex[:6]}", heartbeat_interval=0.3).start()
    for cid in contracts:
        a.host(owner.supervisor(cid, a, step_delay=0.3))
    eventually(lambda: all(owner.seen("task_spawned", c) for c in contracts), what="every supervisor at work")
    tasks = {c: str(owner.ok(owner.http.get(f"/contracts/{c}/supervisor/status"))["task_id"]) for c in contracts}

    # When the daemon stops cleanly (each supervisor saves at shutdown), and two hours pass
    a.stop()
    assert a.outcomes == dict.fromkeys(contracts, "stopped")
    stopped_at = datetime.now(UTC)
    for minutes in (1, 3, 60, 120):
        assert sweep(stack_db, stopped_at + timedelta(minutes=minutes)) & set(tasks.values()) == set()
    for cid in contracts:
        s = owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/status"))
        assert (s["alive"], s["stopped"], s["adoptable"]) == (True, True, True), s

    # Then another daemon adopts all five on its own, restores them clean, and finishes the contracts
    b = Daemon(owner.daemons, f"adopting-{uuid.uuid4().hex[:6]}", heartbeat_interval=0.3)
    b.adopt = lambda cid: owner.supervisor(cid, b, restore=True) if cid in tasks else None
    b.start()
    try:
        eventually(lambda: len(b.adopted) == 5, what="five adoptions")
        assert b.join(timeout=180), "the adopted supervisors did not finish"
    finally:
        b.stop()
    assert sorted(b.adopted) == sorted(contracts)
    assert b.outcomes == dict.fromkeys(contracts, "completed")
    for cid in contracts:
        assert [(r["mode"], r["generation"], r["daemon_id"]) for r in restores(owner, cid)] == [("clean", 2, b.id)]
        assert owner.ok(owner.http.get(f"/contracts/{cid}"))["status"] == "completed"
        names = [t["name"] for t in owner.ok(owner.http.get(f"/contracts/{cid}/tasks"))["tasks"]]
        assert len(names) == len(set(names)), "a task was done twice"


def test_a_killed_supervisor_times_out_and_a_restart_request_has_it_adopted_and_finished(
    stack: Stack, owner: Owner, stack_db: PooledDatabase
) -> None:
    # Given a supervisor that dies in the middle of phase "specify" on a daemon that lives on
    cid = owner.contract("killed, then restarted")
    a = Daemon(owner.daemons, f"survivor-{uuid.uuid4().hex[:6]}", heartbeat_interval=0.3).start()
    victim = ReferenceSupervisor(
        owner.daemons,
        cid,
        daemon_id=a.id,
        config=ReferenceConfig(own_heartbeats=False, step_delay=0.05),
        on_event=owner.on_event,
        crash_when=lambda point: point == "specify:spawned:specify-step-1",
    )
    a.host(victim)
    try:
        eventually(lambda: a.outcomes.get(cid) == "crashed", what="the crash")
        task_id = str(owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/status"))["task_id"])

        # When it times out (the sweep, two minutes and a bit after its last heartbeat) ...
        last = datetime.fromisoformat(owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/status"))["last_heartbeat"])
        assert task_id in sweep(stack_db, last + TIMEOUT + timedelta(seconds=5))
        status = owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/status"))
        assert (status["alive"], status["state"]) == (False, "interrupted")
        # its daemon still beats, so on its own the task is nobody's to take
        time.sleep(1)
        assert task_id not in [t["id"] for t in owner.person.reassignable_tasks()]

        # ... and its owner asks for a restart
        restart = owner.person.request_restart(cid, reason="it died")
        assert (restart["restart_requested"], restart["adoptable"]) == (True, True)

        # Then a live daemon adopts it on its own, restores it and carries the contract to the end
        b = Daemon(owner.daemons, f"rescuer-{uuid.uuid4().hex[:6]}", heartbeat_interval=0.3)
        b.adopt = lambda c: owner.supervisor(c, b, restore=True) if c == cid else None
        b.start()
        try:
            eventually(lambda: b.adopted == [cid], what="the adoption")
            assert b.join(timeout=120)
        finally:
            b.stop()
    finally:
        a.stop()
    assert b.outcomes == {cid: "completed"}
    (restored,) = restores(owner, cid)
    assert (restored["mode"], restored["generation"], restored["daemon_id"]) == ("crash", 2, b.id)
    assert owner.ok(owner.http.get(f"/contracts/{cid}"))["status"] == "completed"
    final = owner.ok(owner.http.get(f"/contracts/{cid}/supervisor/status"))
    assert (final["alive"], final["daemon_id"], final["generation"], final["state"]) == (True, b.id, 2, "completed")
    names = [t["name"] for t in owner.ok(owner.http.get(f"/contracts/{cid}/tasks"))["tasks"] if not t["is_supervisor"]]
    assert len(names) == len(set(names)), "a task was done twice"
