"""Seed 5.1 on the local stack: real WebSocket clients on ``ws://…/api/v1/contracts/monitor``.

Each test drives the running ``makima dev`` over HTTP and reads what its monitors receive: the
filters (contract ids, statuses, stale, heartbeats), owner scoping, resume from the last event id,
refused tokens and bad filter messages.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from makima.domain.monitor import ENVELOPE_KEYS, SEED_FIELDS
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def ws_url(stack: Stack, token: str) -> str:
    return stack.base_url.replace("http://", "ws://") + f"/api/v1/contracts/monitor?token={token}"


class Monitor:
    """A monitor connection and everything it has received, in order."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.received: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a filter (or ping) and return the answer to it."""
        self.conn.send(json.dumps(message))
        return self.next_control()

    def next_control(self, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.conn.recv(timeout=max(0.01, deadline - time.monotonic())))
            if msg["type"] in ("subscribed", "error", "pong", "replayed"):
                return dict(msg)
            self.received.append(msg)

    def drain(self, settle: float = 1.0) -> list[dict[str, Any]]:
        """Read until nothing arrives for ``settle`` seconds; the events received so far."""
        while True:
            try:
                msg = json.loads(self.conn.recv(timeout=settle))
            except TimeoutError:
                return [m for m in self.received if m["type"] not in ("subscribed", "replayed", "pong")]
            self.received.append(msg)

    def wait_for(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for m in self.received:
            if predicate(m):
                return m
        while time.monotonic() < deadline:
            try:
                msg = json.loads(self.conn.recv(timeout=max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                break
            self.received.append(msg)
            if predicate(msg):
                return dict(msg)
        raise AssertionError(f"not received within {timeout}s; got {[m['type'] for m in self.received]}")


@contextmanager
def monitor(stack: Stack, token: str, **filters: Any) -> Iterator[Monitor]:
    with connect(ws_url(stack, token), open_timeout=10) as conn:
        m = Monitor(conn)
        answer = m.send(filters)
        assert answer["type"] == "subscribed", answer
        yield m


def _user(stack: Stack) -> str:
    with stack.client(stack.admin_token) as admin:
        u = admin.post("/users", json={"name": f"mon-{uuid.uuid4().hex[:8]}", "role": "user"}).json()
        token = admin.post(f"/users/{u['id']}/tokens", json={"name": "t"}).json()["token"]
        return str(token)


def _contract(api: httpx.Client, name: str) -> str:
    r = api.post("/contracts", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _status(api: httpx.Client, contract_id: str, status: str, **extra: Any) -> None:
    r = api.post(f"/contracts/{contract_id}/status", json={"status": status, **extra})
    assert r.status_code == 200, r.text


def _of(events: list[dict[str, Any]], contract_id: str) -> list[tuple[str, str | None]]:
    return [(e["type"], (e["data"] or {}).get("new_status")) for e in events if e["contract_id"] == contract_id]


def test_two_monitors_each_see_exactly_their_contracts_in_order(stack: Stack) -> None:
    token = _user(stack)
    with stack.client(token) as api:
        a, b = _contract(api, "alpha"), _contract(api, "beta")
        with (
            monitor(stack, token, contract_ids=[a]) as first,
            monitor(stack, token, contract_ids=[b], statuses=["active", "paused"]) as second,
        ):
            # When both contracts move through the same statuses
            for status in ("active", "paused", "active"):
                _status(api, a, status)
                _status(api, b, status)
            r = api.post(f"/contracts/{a}/questions", json={"question": "Ship it?"})
            assert r.status_code == 201, r.text
            first.wait_for(lambda m: m["type"] == "question_asked")
            second.wait_for(lambda m: m["type"] == "status_changed" and m["data"]["old_status"] == "paused")
            one, two = first.drain(), second.drain()

    # Then the first monitor saw its contract's events and nothing else, in the order they happened
    assert {e["contract_id"] for e in one} == {a}
    assert _of(one, a) == [
        ("status_changed", "active"),
        ("status_changed", "paused"),
        ("status_changed", "active"),
        ("question_asked", None),
        ("status_changed", "waiting_for_input"),
    ]
    ids = [int(e["id"]) for e in one]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # And the second saw only its own contract: the status filter lets through the moves into or out
    # of active/paused (created -> active included), and events of its contract while it is in one
    assert {e["contract_id"] for e in two} == {b}
    assert _of(two, b) == [("status_changed", "active"), ("status_changed", "paused"), ("status_changed", "active")]
    # And every event has the envelope of docs/api.md
    # (and the type's seed fields repeated at the top level from data, as the seed's compatibility rule asks)
    for e in one + two:
        assert {"id", "type", "contract_id", "timestamp", "actor", "data"} <= set(e)
        assert all(e["data"][k] == e[k] for k in set(e) - ENVELOPE_KEYS)
        assert set(e) - ENVELOPE_KEYS <= set(SEED_FIELDS[e["type"]])
        datetime.fromisoformat(e["timestamp"])


def test_a_monitor_sees_only_its_owners_contracts_and_an_admin_sees_all(stack: Stack) -> None:
    mine, theirs = _user(stack), _user(stack)
    with (
        monitor(stack, mine) as me,
        monitor(stack, stack.admin_token) as admin,
        stack.client(mine) as my_api,
        stack.client(theirs) as their_api,
    ):
        c1 = _contract(my_api, "mine")
        c2 = _contract(their_api, "theirs")
        admin.wait_for(lambda m: m["contract_id"] == c2)
        admin.wait_for(lambda m: m["contract_id"] == c1)
        # (a contract of the other user's, and none of it reaches me)
        seen = me.drain()
    assert {e["contract_id"] for e in seen} == {c1}
    assert [e["type"] for e in seen] == ["contract_created"]


def test_status_filter_and_stale_events(stack: Stack) -> None:
    token = _user(stack)
    with stack.client(token) as api:
        paused, active = _contract(api, "paused one"), _contract(api, "active one")
        _status(api, paused, "paused")
        _status(api, active, "active")
        with (
            monitor(stack, token, statuses=["paused"]) as only_paused,
            monitor(stack, token, include_stale=False) as no_stale,
        ):
            # When both go stale (made idle in the database, then the detector runs)
            r = api.patch(f"/contracts/{paused}", json={"description": "touch"})
            assert r.status_code == 200, r.text
            only_paused.wait_for(lambda m: m["type"] == "contract_updated")
            _age_and_detect(stack, [paused, active])
            only_paused.wait_for(lambda m: m["type"] == "stale_detected")
            got, other = only_paused.drain(), no_stale.drain()
    assert {e["contract_id"] for e in got} == {paused}
    assert [e["type"] for e in got] == ["contract_updated", "stale_detected"]
    stale = got[-1]["data"]
    assert stale["stale_duration_secs"] >= 3600
    assert datetime.fromisoformat(stale["last_activity"])
    assert all(e["type"] != "stale_detected" for e in other)


def _age_and_detect(stack: Stack, contract_ids: list[str]) -> None:
    """Make contracts idle for two hours, then run the stale detector as the scheduler would."""
    import psycopg

    from makima.db.connection import SingleConnectionDatabase
    from makima.services.stale import detect_stale_contracts

    url = stack.database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - interval '2 hours' WHERE id = ANY(%s::uuid[])",
            (contract_ids,),
        )
    from datetime import timedelta

    database = SingleConnectionDatabase(url)
    try:
        detect_stale_contracts(database, timedelta(minutes=30))
    finally:
        database.close()
    # Reported once each: by this run, or by the stack's own detector if its minute came in between
    # (then this run reports nothing: an episode is reported once).
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT contract_id::text FROM contract_events"
            " WHERE type = 'stale_detected' AND contract_id = ANY(%s::uuid[])",
            (contract_ids,),
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(contract_ids)


def test_heartbeats_reach_only_monitors_that_ask(stack: Stack) -> None:
    token = _user(stack)
    with stack.client(token) as api:
        c = _contract(api, "beating")
        _status(api, c, "active")
        daemon = api.post("/daemons", json={"name": "hb-host"}).json()["id"]
        sup = api.post(f"/contracts/{c}/supervisor", json={"daemon_id": daemon}).json()["supervisor"]
        with monitor(stack, token, include_heartbeats=True) as beats, monitor(stack, token) as quiet:
            body = {
                "task_id": sup["task_id"],
                "state": "working",
                "phase": "plan",
                "current_activity": "reading the spec",
                "progress": 40,
                "timestamp": datetime.now(UTC).isoformat(),
            }
            r = api.post(f"/contracts/{c}/supervisor/heartbeat", json=body)
            assert r.status_code == 200, r.text
            hb = beats.wait_for(lambda m: m["type"] == "heartbeat")
            state = quiet.wait_for(lambda m: m["type"] == "supervisor_state_changed")
            rest = quiet.drain()
    assert hb["contract_id"] == c
    assert hb["id"].startswith(f"hb:{sup['task_id']}:")
    assert hb["data"] == {
        "supervisor_task_id": sup["task_id"],
        "state": "working",
        "activity": "reading the spec",
        "progress": 40,
    }
    assert state["data"]["new_state"] == "working"
    assert all(e["type"] != "heartbeat" for e in rest)


def test_resume_replays_what_was_missed_in_order_then_goes_live(stack: Stack) -> None:
    token = _user(stack)
    with stack.client(token) as api:
        c = _contract(api, "resumable")
        with monitor(stack, token, contract_ids=[c]) as first:
            _status(api, c, "active")
            last = first.wait_for(lambda m: m["type"] == "status_changed")
        # While disconnected, three changes happen
        _status(api, c, "paused")
        _status(api, c, "active")
        api.patch(f"/contracts/{c}", json={"description": "while away"})
        with connect(ws_url(stack, token), open_timeout=10) as conn:
            second = Monitor(conn)
            answer = second.send({"contract_ids": [c], "last_event_id": last["id"]})
            assert answer["type"] == "subscribed"
            assert answer["resuming"] is True
            done = second.next_control()
            replayed = list(second.received)
            _status(api, c, "paused")
            live = second.wait_for(
                lambda m: m["type"] == "status_changed" and int(m["id"]) > int(done["last_event_id"])
            )
    assert done["type"] == "replayed"
    assert done["complete"] is True
    assert done["count"] == 3
    assert [(e["type"], e["data"].get("new_status")) for e in replayed] == [
        ("status_changed", "paused"),
        ("status_changed", "active"),
        ("contract_updated", None),
    ]
    assert all(int(e["id"]) > int(last["id"]) for e in replayed)
    assert live["data"]["new_status"] == "paused"


def test_bad_tokens_and_bad_filters_get_clear_answers(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(stack, "mkm_not_a_token"), open_timeout=10)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(stack.base_url.replace("http://", "ws://") + "/api/v1/contracts/monitor", open_timeout=10)
    token = _user(stack)
    # A token in the Authorization header works too
    with connect(
        stack.base_url.replace("http://", "ws://") + "/api/v1/contracts/monitor",
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
    ) as conn:
        m = Monitor(conn)
        assert m.send({"action": "ping"}) == {"type": "pong"}
        bad = m.send({"statuses": ["sleeping"]})
        assert bad["type"] == "error"
        assert bad["code"] == "VALIDATION_FAILED"
        assert bad["details"]["errors"][0]["field"].startswith("statuses")
        assert m.send({"contract_ids": "all"})["code"] == "VALIDATION_FAILED"
        assert m.send({"colour": "red"})["code"] == "VALIDATION_FAILED"
        assert m.send({"last_event_id": "hb:x:1"})["code"] == "VALIDATION_FAILED"
        conn.send("not json")
        assert m.next_control()["code"] == "VALIDATION_FAILED"
        ok = m.send({"statuses": ["active"], "include_heartbeats": True})
        assert ok == {
            "type": "subscribed",
            "filter": {"contract_ids": None, "statuses": ["active"], "include_stale": True, "include_heartbeats": True},
            "resuming": False,
        }


# --- revocation (issue 12) ----------------------------------------------------------------------------------


def _user_with_token(stack: Stack, role: str = "user") -> tuple[str, str]:
    """A new user (or admin) and one token of theirs: (token, token id)."""
    with stack.client(stack.admin_token) as admin:
        u = admin.post("/users", json={"name": f"rv-{uuid.uuid4().hex[:8]}", "role": role}).json()
        issued = admin.post(f"/users/{u['id']}/tokens", json={"name": "t"}).json()
        return str(issued["token"]), str(issued["id"])


def _closed_within(m: Monitor, seconds: float) -> tuple[int | None, str | None, list[dict[str, Any]]]:
    """Read until the server closes the socket (or ``seconds`` pass): (close code, reason, messages read)."""
    from websockets.exceptions import ConnectionClosed

    deadline = time.monotonic() + seconds
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            got.append(json.loads(m.conn.recv(timeout=max(0.01, deadline - time.monotonic()))))
        except TimeoutError:
            break
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None), got
    raise AssertionError(f"still open after {seconds}s; received {[g.get('type') for g in got]}")


def test_revoking_a_token_closes_its_monitors_within_seconds(stack: Stack) -> None:
    # Given monitors open with a user's token and with an admin's token, and a monitor on another token
    user_token, user_token_id = _user_with_token(stack)
    admin_token, admin_token_id = _user_with_token(stack, role="admin")
    bystander = _user(stack)
    with (
        monitor(stack, user_token) as mine,
        monitor(stack, admin_token) as boss,
        monitor(stack, bystander) as other,
        stack.client(user_token) as api,
        stack.client(bystander) as other_api,
    ):
        c = _contract(api, "before revocation")
        mine.wait_for(lambda m: m.get("contract_id") == c)
        boss.wait_for(lambda m: m.get("contract_id") == c)

        # When both tokens are revoked through the API
        started = time.monotonic()
        with stack.client(stack.admin_token) as admin:
            assert admin.delete(f"/tokens/{user_token_id}").status_code == 204
            assert admin.delete(f"/tokens/{admin_token_id}").status_code == 204
        # ... and events keep happening (the bystander's, which the admin monitor would have seen)
        later = _contract(other_api, "after revocation")

        # Then both sockets are closed with 4401 and the reason, within 5 s, and got no later event
        for m in (mine, boss):
            code, reason, got = _closed_within(m, 5.0)
            assert code == 4401, (code, reason)
            assert reason is not None
            assert "revoked" in reason
            assert all(g.get("contract_id") != later for g in got)
            assert got[-1]["type"] == "error"
            assert got[-1]["code"] == "UNAUTHORIZED"
        assert time.monotonic() - started < 5.0
        # And the other token's monitor goes on
        other.wait_for(lambda m: m.get("contract_id") == later)

    # And a reconnect with a revoked token is refused at the handshake
    for token in (user_token, admin_token):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(stack, token), open_timeout=10)
        assert refused.value.response.status_code == 403


def test_a_revocation_by_another_process_closes_the_monitor_within_the_sweep(stack: Stack) -> None:
    import psycopg

    token, token_id = _user_with_token(stack)
    with monitor(stack, token) as m:
        assert m.send({"action": "ping"}) == {"type": "pong"}
        # When the token is revoked straight in the database (another process, as an operator would)
        started = time.monotonic()
        with psycopg.connect(stack.database_url(), autocommit=True) as conn:
            conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (token_id,))
        # Then the stack's sweep (every second) closes the socket with 4401
        code, _, got = _closed_within(m, 5.0)
        assert code == 4401
        assert time.monotonic() - started < 5.0
        assert [g["type"] for g in got] == ["error"]


def test_a_tokens_monitors_are_bounded_in_number_and_message_size(stack: Stack) -> None:
    """Issue 13: at most ``[monitor] max_connections_per_token`` (20) open monitors per token; a message
    over ``max_message_bytes`` (48 KiB) gets an error, one far over it (the server's frame limit) is not
    read at all."""
    token = _user(stack)
    held = [connect(ws_url(stack, token), open_timeout=10) for _ in range(20)]
    try:
        # The 21st is told why, then closed with 4429
        with connect(ws_url(stack, token), open_timeout=10) as extra:
            refused = json.loads(extra.recv(timeout=10))
            assert (refused["type"], refused["code"]) == ("error", "TOO_MANY_CONNECTIONS")
            with pytest.raises(ConnectionClosed) as closed:
                extra.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4429

        # A message a little over the limit is refused, and the connection goes on
        first = Monitor(held[0])
        answer = first.send({"statuses": ["active"], "pad": "x" * 60_000})
        assert (answer["type"], answer["code"]) == ("error", "PAYLOAD_TOO_LARGE")
        assert first.send({"action": "ping"}) == {"type": "pong"}

        # One over the server's frame limit (twice the message limit) is not read: close 1009 (too big)
        with contextlib.suppress(ConnectionClosed):
            held[1].send("x" * (200 * 1024))
        with pytest.raises(ConnectionClosed) as cut:
            held[1].recv(timeout=10)
        assert cut.value.rcvd is not None
        assert cut.value.rcvd.code == 1009
        # A 4 MiB one too (the client may not even see the close frame: the server stops reading and
        # closes while it is still writing), and the server goes on serving
        with contextlib.suppress(ConnectionClosed):
            held[2].send("x" * (4 * 1024 * 1024))
        with pytest.raises(ConnectionClosed):
            held[2].recv(timeout=10)
        assert httpx.get(f"{stack.base_url}/api/v1/health", timeout=5).status_code == 200
    finally:
        for conn in held:
            conn.close()
