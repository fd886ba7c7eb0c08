"""Sync waits against the local stack (``makima dev`` under uvicorn, not TestClient: what starved was
uvicorn's threadpool and the connection pool, which TestClient does not reproduce).

- 45 waits by one user leave another user's ``GET /contracts`` fast (on the old code each wait slept
  in a threadpool thread, and polled the database every 200 ms: the other user waited for them);
- a wait ends as soon as the heartbeat that collects the request commits (NOTIFY), not at the next
  200 ms poll; a wait nobody answers still ends in 202;
- the per-token limit of concurrent waits answers 429 ``RATE_LIMITED`` with ``Retry-After`` and
  changes nothing; other tokens still wait;
- the stack's one LISTEN connection, lost (its backend terminated), is re-opened, and the waits in
  flight when it went still end when their heartbeat comes.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import server_dir
from tests.e2e.conftest import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

PER_TOKEN = 50  # the stack's [sync] waits_per_token here: the 45 waits below all wait
LISTENER = "makima-sync-listener"  # the application_name of the stack's LISTEN connection


@pytest.fixture(scope="module")
def sync_stack() -> Iterator[Stack]:
    root = server_dir()
    s = start_stack(root / "pgdata", root / "stack.log", settings={"MAKIMA_SYNC__WAITS_PER_TOKEN": str(PER_TOKEN)})
    try:
        yield s
    finally:
        stop_stack(s)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class User:
    token: str
    http: httpx.Client

    def ok(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code < 300, r.text
        return dict(r.json())

    def supervisor(self) -> str:
        """A contract with a started supervisor (alive: it has not missed a heartbeat)."""
        cid = str(self.ok(self.http.post("/contracts", json={"name": "sync", "contract_type": "specification"}))["id"])
        self.ok(self.http.post(f"/contracts/{cid}/supervisor", json={}))
        return cid

    def beat(self, cid: str) -> dict[str, Any]:
        status = self.ok(self.http.get(f"/contracts/{cid}/supervisor/status"))
        body = {
            "task_id": status["task_id"],
            "timestamp": datetime.now(UTC).isoformat(),
            "state": "working",
            "phase": status["phase"],
            "current_activity": "synced",
            "progress": 10,
            "pending_task_ids": [],
        }
        return self.ok(self.http.post(f"/contracts/{cid}/supervisor/heartbeat", json=body))

    def requested(self, cid: str) -> bool:
        return bool(self.ok(self.http.get(f"/contracts/{cid}/supervisor/status"))["sync_requested"])


def _user(stack: Stack, name: str) -> User:
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"{name}-{uuid.uuid4().hex[:8]}"}).json()
        token = admin.post(f"/users/{user['id']}/tokens", json={"kind": "user"}).json()["token"]
    return User(token, stack.client(token))


@pytest.fixture
def alice(sync_stack: Stack) -> Iterator[User]:
    u = _user(sync_stack, "alice")
    with u.http:
        yield u


@pytest.fixture
def bob(sync_stack: Stack) -> Iterator[User]:
    u = _user(sync_stack, "bob")
    with u.http:
        yield u


def _until(check: Any, timeout: float = 10.0, every: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


class Waiting:
    """A sync call in flight on its own thread."""

    def __init__(self, user: User, api: str, cid: str, wait: float) -> None:
        self.answer: httpx.Response | None = None
        self.answered_at = 0.0

        def run() -> None:
            with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {user.token}"}, timeout=60) as c:
                self.answer = c.post(f"/contracts/{cid}/supervisor/sync", json={"wait_seconds": wait})
                self.answered_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 30) -> httpx.Response:
        self.thread.join(timeout)
        assert self.answer is not None, "no answer"
        return self.answer


def _collected_promptly(user: User, api: str, cid: str) -> float:
    """Ask with a long wait, beat as soon as the request is in, and return the wait it reported."""
    waiting = Waiting(user, api, cid, 20)
    _until(lambda: user.requested(cid))
    user.beat(cid)
    beaten_at = time.monotonic()
    r = waiting.result()
    assert r.status_code == 200, r.text
    assert r.json()["synced"] is True
    assert waiting.answered_at - beaten_at < 0.15  # the old code answered at its next 200 ms poll at best
    return float(r.json()["waited_seconds"])


def test_many_waits_by_one_user_leave_another_users_requests_fast(sync_stack: Stack, alice: User, bob: User) -> None:
    # Given 45 contracts of Alice's with live supervisors, and Bob's usual request's latency
    cids = [alice.supervisor() for _ in range(45)]
    bob.ok(bob.http.get("/contracts"))

    # When Alice asks each of them to sync, waiting 4 s, all at once
    async def waits() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {alice.token}"}
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=sync_stack.api, headers=headers, timeout=60, limits=limits) as c:
            return list(
                await asyncio.gather(
                    *(c.post(f"/contracts/{cid}/supervisor/sync", json={"wait_seconds": 4}) for cid in cids)
                )
            )

    answers: list[httpx.Response] = []
    t = threading.Thread(target=lambda: answers.extend(asyncio.run(waits())), daemon=True)
    started = time.monotonic()
    t.start()
    time.sleep(0.7)  # all 45 are in and waiting

    # Then Bob's listing answers at once, not when Alice's waits end
    latencies = []
    for _ in range(5):
        t0 = time.monotonic()
        bob.ok(bob.http.get("/contracts"))
        latencies.append(time.monotonic() - t0)
    assert max(latencies) < 0.5, latencies
    assert time.monotonic() - started < 3.5, "measured after Alice's waits ended: not a measurement"
    t.join(30)
    # and every wait ended in its 202 (no heartbeat came), none refused
    assert [r.status_code for r in answers] == [202] * 45, {r.text for r in answers}


def test_a_wait_ends_when_the_collecting_heartbeat_commits(sync_stack: Stack, alice: User) -> None:
    cid = alice.supervisor()
    waited = [_collected_promptly(alice, sync_stack.api, cid) for _ in range(3)]
    # the old code slept 200 ms before it first looked: it never answered sooner
    assert max(waited) < 0.2, waited


def test_a_wait_no_heartbeat_collects_still_answers_202(sync_stack: Stack, alice: User) -> None:
    cid = alice.supervisor()
    r = alice.http.post(f"/contracts/{cid}/supervisor/sync", json={"wait_seconds": 0.6})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["synced"], body["sync_requested"]) == (False, True)
    assert 0.6 <= body["waited_seconds"] < 1.5
    assert alice.beat(cid)["sync_requested"] is True  # the request stands


def test_waits_past_the_per_token_limit_are_refused_with_429(sync_stack: Stack, alice: User, bob: User) -> None:
    # Given Alice's token holding its limit of waits
    cids = [alice.supervisor() for _ in range(PER_TOKEN + 1)]
    # (waits long enough to outlast a slow start of the others on a loaded machine; beats end them below)
    waiting = [Waiting(alice, sync_stack.api, cid, 20) for cid in cids[:PER_TOKEN]]
    _until(lambda: all(alice.requested(cid) for cid in cids[:PER_TOKEN]), every=0.05)

    # When she asks for one more wait
    r = alice.http.post(f"/contracts/{cids[-1]}/supervisor/sync", json={"wait_seconds": 20})

    # Then it is refused at once, saying when to retry, and asked nothing of the supervisor
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(r.headers["Retry-After"]) <= 20
    assert alice.requested(cids[-1]) is False
    # a request that does not wait is still taken
    assert alice.http.post(f"/contracts/{cids[-1]}/supervisor/sync", json={"wait_seconds": 0}).status_code == 202
    # and another token still waits (and is answered when its heartbeat comes)
    other = bob.supervisor()
    assert _collected_promptly(bob, sync_stack.api, other) < 0.2
    # and the waits held are answered when their heartbeats come
    for cid in cids[:PER_TOKEN]:
        alice.beat(cid)
    assert [w.result().status_code for w in waiting] == [200] * PER_TOKEN


def _listener_pid(url: str) -> int | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (LISTENER,),
        ).fetchone()
    return int(row[0]) if row else None


def test_a_lost_listener_connection_is_reopened(sync_stack: Stack, alice: User) -> None:
    url = sync_stack.database_url()
    # Given the stack's one LISTEN connection, and a wait in flight
    _until(lambda: _listener_pid(url) is not None, every=0.05)
    first = _listener_pid(url)
    cid = alice.supervisor()
    waiting = Waiting(alice, sync_stack.api, cid, 20)
    _until(lambda: alice.requested(cid))

    # When its backend is terminated (a database restart, a network cut)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (first,))

    # Then the listener comes back on a new connection
    _until(lambda: _listener_pid(url) not in (None, first), every=0.05)
    # the wait in flight ends when its heartbeat comes
    alice.beat(cid)
    r = waiting.result(timeout=5)
    assert (r.status_code, r.json()["synced"]) == (200, True)
    # and new waits end promptly again
    assert _collected_promptly(alice, sync_stack.api, cid) < 0.2
