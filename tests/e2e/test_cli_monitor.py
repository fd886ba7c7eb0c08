"""``makima contracts monitor`` against the running local stack, as a real ``python -m makima.cli.main``
subprocess: the WebSocket connection, every event shown exactly once in text and JSON (compared with the
contract's event log), the filters (contract ids, --status, --quiet, --stale), a refused token, resuming
after the connection is cut (through a TCP proxy the test cuts) and after the stack itself restarts, and
the dashboard (Textual's pilot), both fed by hand and live from the stack, and once in a real terminal.

Each test's contracts belong to a user of its own, so the other e2e tests' events never show up.

``python -m tests.e2e.test_cli_monitor docs/img/cli-monitor-tui.svg`` retakes the dashboard's picture
against a ``makima dev --demo`` stack (``MAKIMA_API_URL``, ``MAKIMA_TOKEN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from makima.cli.config import connect
from makima.cli.monitor import describe, load_contracts, text_line
from makima.cli.monitor_stream import Filter, Item, Notice, Selection, events, monitor_url
from makima.cli.tui import Board, HttpLookup, MonitorApp
from makima.domain.monitor import ENVELOPE_KEYS
from tests.e2e.conftest import ADMIN_TOKEN, Stack, free_port, start_stack, stop_stack
from tests.e2e.test_monitor import _age_and_detect

pytestmark = pytest.mark.e2e


# --- Driving the stack ---------------------------------------------------------------------------------------


@dataclass
class Owner:
    stack: Stack
    token: str

    def http(self) -> httpx.Client:
        return self.stack.client(self.token)

    def create(self, name: str) -> str:
        with self.http() as api:
            r = api.post("/contracts", json={"name": name})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.http() as api:
            r = api.post(path, json=body or {})
            assert r.status_code < 300, r.text
            data: dict[str, Any] = r.json()
            return data

    def status(self, cid: str, status: str, reason: str | None = None) -> None:
        self.post(f"/contracts/{cid}/status", {"status": status, "reason": reason})

    def touch(self, cid: str, description: str) -> None:
        with self.http() as api:
            r = api.patch(f"/contracts/{cid}", json={"description": description})
            assert r.status_code == 200, r.text

    def logged(self, cid: str) -> list[dict[str, Any]]:
        """The contract's events from the event log, as monitor envelopes."""
        with self.http() as api:
            rows = api.get(f"/contracts/{cid}/events", params={"limit": 1000}).json()["events"]
        return [
            {
                "id": str(r["id"]),
                "type": r["type"],
                "contract_id": r["contract_id"],
                "timestamp": r["created_at"],
                "actor": r["actor"],
                "data": {k: v for k, v in r["payload"].items() if k != "contract_id"},
            }
            for r in rows
        ]


def new_owner(stack: Stack) -> Owner:
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"mon-cli-{uuid.uuid4().hex[:10]}"}).json()
        token = admin.post(f"/users/{user['id']}/tokens", json={"name": "cli"}).json()["token"]
    return Owner(stack, str(token))


def same_event(shown: Mapping[str, Any], logged: Mapping[str, Any]) -> bool:
    """The monitor's envelope is the log's row (its timestamp in another ISO-8601 spelling), plus the
    type's seed fields repeated at the top level from ``data`` (the seed's compatibility rule)."""
    envelope = {k: v for k, v in shown.items() if k in ENVELOPE_KEYS and k != "timestamp"}
    repeated = {k: v for k, v in shown.items() if k not in ENVELOPE_KEYS}
    return (
        envelope == {k: v for k, v in logged.items() if k != "timestamp"}
        and all(shown["data"].get(k) == v for k, v in repeated.items())
        and datetime.fromisoformat(shown["timestamp"]) == datetime.fromisoformat(logged["timestamp"])
    )


# --- The command as a subprocess ---------------------------------------------------------------------------


class CliMonitor:
    """``makima contracts monitor …`` running; what it has printed so far, line by line."""

    def __init__(self, api_url: str, token: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MAKIMA_")},
            "MAKIMA_API_URL": api_url,
            "MAKIMA_TOKEN": token,
            "MAKIMA_CLI_CONFIG": "/nonexistent/makima-cli.toml",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.args = [sys.executable, "-m", "makima.cli.main", "contracts", "monitor", *args]
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=full_env,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not ready()):
                    self._changed.wait(0.2)  # the readers' last lines
                    if ready():
                        return
                    raise AssertionError(f"{what} not seen within {timeout}s;\nstdout: {self.out}\nstderr: {self.err}")
                self._changed.wait(min(left, 0.5))

    def wait_err(self, text: str, count: int = 1, timeout: float = 30) -> None:
        self._wait(lambda: sum(text in line for line in self.err) >= count, f"stderr {text!r} x{count}", timeout)

    def wait_out(self, count: int, timeout: float = 30) -> list[str]:
        self._wait(lambda: len(self.out) >= count, f"{count} stdout lines", timeout)
        return list(self.out)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out]

    def interrupt(self, timeout: float = 20) -> int:
        """Ctrl-C; the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        time.sleep(0.2)  # the readers' last lines
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def cli_monitor(api_url: str, token: str, *args: str, connected: bool = True, **kw: Any) -> Iterator[CliMonitor]:
    monitor = CliMonitor(api_url, token, *args, **kw)
    try:
        if connected:
            monitor.wait_err("monitor: connected to ")
        yield monitor
    finally:
        monitor.close()


# --- Text and JSON -----------------------------------------------------------------------------------------


def test_json_and_text_show_each_event_of_the_watched_contract_exactly_once(stack: Stack) -> None:
    owner = new_owner(stack)
    watched, other = owner.create("watched"), owner.create("other")
    with (
        cli_monitor(stack.base_url, owner.token, watched, "--format", "json") as as_json,
        cli_monitor(stack.base_url, owner.token, watched[:8], "--format", "text") as as_text,  # a prefix
    ):
        # When the watched contract and another one change
        owner.status(watched, "active", "go")
        owner.status(other, "active")
        owner.post(f"/contracts/{watched}/questions", {"question": "Ship it?"})
        owner.touch(other, "not watched")
        owner.status(watched, "paused", "waiting for review")
        shown = as_json.wait_out(4)
        as_text.wait_out(4)
        time.sleep(0.5)  # nothing more arrives
        # Ctrl-C ends the monitor with status 0
        assert as_json.interrupt() == 0
        assert as_text.interrupt() == 0

    # Then the JSON lines are the watched contract's events exactly, in order: the envelopes of its log
    logged = [e for e in owner.logged(watched) if e["type"] != "contract_created"]
    events = as_json.events()
    assert len(events) == len(logged) == 4
    assert all(same_event(s, g) for s, g in zip(events, logged, strict=True)), (events, logged)
    assert [e["type"] for e in events] == ["status_changed", "question_asked", "status_changed", "status_changed"]
    assert len(shown) == 4
    # And the text lines say the same, one line each
    when = [datetime.fromisoformat(e["timestamp"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for e in events]
    short = watched[:8]
    assert as_text.out == [
        f"{when[0]}  {short}  status_changed  created → active  (go)",
        f"{when[1]}  {short}  question_asked  'Ship it?'",
        f"{when[2]}  {short}  status_changed  active → waiting_for_input",
        f"{when[3]}  {short}  status_changed  waiting_for_input → paused  (waiting for review)",
    ]
    # And stderr says where it connected, without the token
    assert as_json.err[0] == f"monitor: connected to {stack.base_url.replace('http', 'ws')}/api/v1/contracts/monitor"
    assert not any(owner.token in line for line in as_json.err + as_text.err)


def test_status_filter_follows_contracts_into_and_out_of_the_watched_statuses(stack: Stack) -> None:
    owner = new_owner(stack)
    a, b = owner.create("a"), owner.create("b")
    owner.status(a, "active")
    owner.status(b, "active")
    with cli_monitor(stack.base_url, owner.token, "--status", "paused", "--format", "json") as paused:
        owner.touch(b, "active: not shown")
        owner.status(a, "paused", "break")  # into paused: shown
        owner.touch(a, "while paused: shown")
        owner.status(a, "active", "back")  # out of paused: shown
        owner.touch(a, "active again: not shown")
        owner.status(b, "paused")  # shown, and the last
        paused.wait_out(4)
        time.sleep(0.5)
        assert paused.interrupt() == 0
    got = [(e["contract_id"], e["type"], e["data"].get("new_status")) for e in paused.events()]
    assert got == [
        (a, "status_changed", "paused"),
        (a, "contract_updated", None),
        (a, "status_changed", "active"),
        (b, "status_changed", "paused"),
    ]


def test_quiet_and_stale_show_only_what_they_promise(stack: Stack) -> None:
    owner = new_owner(stack)
    c = owner.create("busy")
    owner.status(c, "active")
    with (
        cli_monitor(stack.base_url, owner.token, c, "--quiet", "--format", "text") as quiet,
        cli_monitor(stack.base_url, owner.token, c, "--stale", "--format", "text") as stale,
    ):
        ok = owner.post(f"/contracts/{c}/tasks", {"name": "fine"})
        owner.post(f"/contracts/{c}/tasks/{ok['id']}/status", {"status": "completed"})
        bad = owner.post(f"/contracts/{c}/tasks", {"name": "broken"})
        owner.post(f"/contracts/{c}/tasks/{bad['id']}/status", {"status": "failed", "error": "exit 1"})
        owner.touch(c, "an update")
        _age_and_detect(stack, [c])
        quiet.wait_out(2)
        stale.wait_out(1)
        time.sleep(0.5)
        assert quiet.interrupt() == 0
        assert stale.interrupt() == 0
    # --quiet: the failed task and the contract going stale; not the spawns, the success, the update
    assert [line.split("  ")[2:] for line in quiet.out] == [
        ["task_completed", "task broken FAILED: exit 1"],
        ["stale_detected", quiet.out[1].split("  ")[3]],
    ]
    assert quiet.out[1].split("  ")[3].startswith("idle 2h, since ")
    # --stale: only that
    assert stale.out == quiet.out[1:]


def test_a_refused_token_is_one_line_and_exit_1_without_retrying(stack: Stack) -> None:
    monitor = CliMonitor(stack.base_url, "mkm_not_a_token", "--format", "text")
    try:
        assert monitor.wait(timeout=30) == 1
    finally:
        monitor.close()
    assert monitor.out == []
    assert monitor.err == ["error: UNAUTHORIZED: the monitor refused the token (HTTP 403): missing, unknown or revoked"]


def test_a_token_revoked_while_watching_ends_the_monitor_at_once(stack: Stack) -> None:
    """Revocation reaches the CLI: the server closes the monitor (UNAUTHORIZED, then 4401) and the
    command ends with that error and exit 1 within seconds, instead of reconnecting to be refused."""
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"mon-cli-rv-{uuid.uuid4().hex[:10]}"}).json()
        issued = admin.post(f"/users/{user['id']}/tokens", json={"name": "cli"}).json()
    with cli_monitor(stack.base_url, str(issued["token"]), "--format", "text") as monitor:
        with stack.client() as admin:
            assert admin.delete(f"/tokens/{issued['id']}").status_code == 204
        assert monitor.wait(timeout=5) == 1
    assert monitor.err[-1] == "error: UNAUTHORIZED: the token of this connection was revoked"


def test_an_unreachable_monitor_is_retried_until_the_duration_ends(stack: Stack) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monitor = CliMonitor(dead, "mkm_whatever", "--format", "json", "--duration", "2.5")
    try:
        assert monitor.wait(timeout=30) == 3
    finally:
        monitor.close()
    retries = [line for line in monitor.err if "retrying in" in line]
    assert len(retries) >= 2
    assert retries[0].startswith(f"monitor: cannot connect to {dead.replace('http', 'ws')}/api/v1/contracts/monitor")
    assert "connection refused" in retries[0]
    assert monitor.err[-1].startswith("error: could not connect to ")


# --- Reconnecting -----------------------------------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy to the stack whose connections the test can cut (and refuse) at will."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()
        listener.close()  # here, by the thread that accepts, so the port is free once it returns

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            deadline = time.monotonic() + 5
            while listener.fileno() != -1 and time.monotonic() < deadline:
                time.sleep(0.02)  # the accepting thread closes it
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()


def test_a_cut_connection_is_resumed_with_what_was_missed_and_no_duplicates(stack: Stack) -> None:
    owner = new_owner(stack)
    c = owner.create("resumable")
    proxy = CuttableProxy(int(stack.base_url.rsplit(":", 1)[1]))
    ws = f"ws://127.0.0.1:{proxy.port}/api/v1/contracts/monitor"
    try:
        with cli_monitor(stack.base_url, owner.token, c, "--format", "json", "--monitor-url", ws) as monitor:
            assert monitor.err[0] == f"monitor: connected to {ws}"
            owner.status(c, "active", "before")
            monitor.wait_out(1)
            # When the connection is cut, and the contract changes meanwhile
            proxy.cut()
            monitor.wait_err("reconnecting in")
            owner.status(c, "paused", "missed 1")
            owner.touch(c, "missed 2")
            # Then, once it can reconnect, it resumes from the last event it saw and gets both
            proxy.open()
            monitor.wait_err("monitor: connected to ", count=2)
            monitor.wait_err("missed event(s) replayed")
            owner.status(c, "active", "live again")
            monitor.wait_out(4)
            time.sleep(0.5)
            assert monitor.interrupt() == 0
    finally:
        proxy.close()
    logged = [e for e in owner.logged(c) if e["type"] != "contract_created"]
    shown = monitor.events()
    assert [e["id"] for e in shown] == [e["id"] for e in logged]
    assert all(same_event(s, g) for s, g in zip(shown, logged, strict=True))
    assert [e["data"].get("reason") for e in shown] == ["before", "missed 1", None, "live again"]
    lost = next(line for line in monitor.err if "reconnecting in" in line)
    assert lost.startswith("monitor: disconnected (")
    resumed = next(line for line in monitor.err if "replayed" in line)
    assert resumed == f"monitor: resumed after event {shown[0]['id']}: 2 missed event(s) replayed"


def test_the_monitor_outlives_a_restart_of_the_stack(stack_dir: Path) -> None:
    port = free_port()
    first = start_stack(stack_dir / "pgdata", stack_dir / "stack-1.log", port=port)
    second: Stack | None = None
    try:
        owner = Owner(first, ADMIN_TOKEN)
        c = owner.create("through a restart")
        with cli_monitor(first.base_url, ADMIN_TOKEN, c, "--format", "json") as monitor:
            owner.status(c, "active", "before")
            monitor.wait_out(1)
            # When the stack stops, the monitor says it is reconnecting (and keeps trying)
            stop_stack(first)
            monitor.wait_err("monitor: disconnected (")
            # And when it is back on the same address, the monitor reconnects and resumes by itself
            second = start_stack(stack_dir / "pgdata", stack_dir / "stack-2.log", port=port)
            monitor.wait_err("monitor: connected to ", count=2, timeout=60)
            monitor.wait_err("monitor: resumed after event")
            Owner(second, ADMIN_TOKEN).status(c, "paused", "after")
            monitor.wait_out(2)
            assert monitor.interrupt() == 0
        assert [e["data"]["reason"] for e in monitor.events()] == ["before", "after"]
        assert sum("reconnecting in" in line for line in monitor.err) >= 1
    finally:
        if second is not None:
            stop_stack(second)
        elif first.process.poll() is None:
            stop_stack(first)


# --- The dashboard -----------------------------------------------------------------------------------------

CID = "3f2b8c1e-0000-4000-8000-000000000001"
CID2 = "9a7d0c55-0000-4000-8000-000000000002"
TS = "2026-11-24T16:14:11+00:00"


def _event(kind: str, data: dict[str, Any], *, id: str, cid: str = CID) -> dict[str, Any]:
    return {"id": id, "type": kind, "contract_id": cid, "timestamp": TS, "actor": "user:u", "data": data}


class Feed:
    """A hand-fed stream for the dashboard, in place of the WebSocket."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue()

    async def items(self) -> AsyncIterator[Item]:
        while True:
            yield await self.queue.get()


def cells(app: MonitorApp, cid: str) -> list[str]:
    return [str(c) for c in app.table.get_row(cid)]


def test_the_dashboard_shows_fed_events_in_its_table_log_and_status_bar() -> None:
    async def scenario() -> None:
        feed = Feed()
        looked_up: list[str] = []

        async def lookup(cid: str) -> dict[str, Any] | None:
            looked_up.append(cid)
            return {"id": cid, "name": "found by lookup", "status": "paused", "phase": "execute"}

        board = Board()
        board.load([{"id": CID, "name": "alpha", "status": "active", "phase": "plan", "last_activity_at": TS}])
        app = MonitorApp(feed.items, board, lookup=lookup, source_name="ws://h/api/v1/contracts/monitor")
        async with app.run_test(size=(160, 40)) as pilot:
            assert cells(app, CID) == ["alpha 3f2b8c1e", "active", "plan", "—", "", "11-24 16:14:11"]
            assert app.status_text().startswith("connecting to ws://h/api/v1/contracts/monitor…")
            await feed.queue.put(Notice("connected", "connected to ws://h/api/v1/contracts/monitor"))
            await feed.queue.put(
                _event("heartbeat", {"state": "working", "progress": 40, "activity": "reading"}, id="hb:1")
            )
            await feed.queue.put(_event("phase_changed", {"old_phase": "plan", "new_phase": "execute"}, id="7"))
            await feed.queue.put(_event("task_completed", {"task_name": "t", "success": True}, id="8", cid=CID2))
            await pilot.pause(0.2)
            assert cells(app, CID)[:5] == ["alpha 3f2b8c1e", "active", "execute", "working 40%", "reading"]
            # An unknown contract gets a row, and its name from the API
            assert looked_up == [CID2]
            assert cells(app, CID2)[:3] == ["found by lookup 9a7d0c55", "paused", "execute"]
            # Heartbeats update the table but not the log
            assert list(app.event_log.lines) == [
                "2026-11-24T16:14:11Z  3f2b8c1e  phase_changed  plan → execute",
                "2026-11-24T16:14:11Z  9a7d0c55  task_completed  task t succeeded",
            ]
            assert app.status_text() == (
                "● connected to ws://h/api/v1/contracts/monitor  |  2 contract(s)  |  2 event(s) shown"
            )
            # p pauses the log: events are held, the table still moves
            await pilot.press("p")
            await feed.queue.put(_event("status_changed", {"old_status": "active", "new_status": "paused"}, id="9"))
            await feed.queue.put(Notice("reconnecting", "disconnected (connection dropped); reconnecting in 1.2s"))
            await pilot.pause(0.2)
            assert len(app.event_log.lines) == 2
            assert cells(app, CID)[1] == "paused"
            assert app.status_text().startswith("○ disconnected (connection dropped); reconnecting in 1.2s")
            assert app.status_text().endswith("log paused (1 held; p resumes)")
            await pilot.press("p")
            await pilot.pause(0.1)
            assert app.event_log.lines[-1] == "2026-11-24T16:14:11Z  3f2b8c1e  status_changed  active → paused"
            # A duplicate id was the stream's business; a stale contract is marked
            await feed.queue.put(_event("stale_detected", {"last_activity": TS, "stale_duration_secs": 7200}, id="10"))
            await pilot.pause(0.2)
            assert cells(app, CID)[1] == "paused (stale)"
            await pilot.press("q")
        assert app.return_code == 0
        assert app.error is None

    asyncio.run(scenario())


def test_the_dashboard_reloads_its_table_when_the_monitor_says_reload() -> None:
    async def scenario() -> None:
        feed = Feed()
        reloads: list[int] = []

        async def reload() -> tuple[list[dict[str, Any]], set[str]]:
            reloads.append(1)
            return [{"id": CID2, "name": "from the snapshot", "status": "blocked", "phase": "execute"}], set()

        board = Board()
        board.load([{"id": CID, "name": "alpha", "status": "active", "phase": "plan", "last_activity_at": TS}])
        app = MonitorApp(feed.items, board, source_name="ws://h/api/v1/contracts/monitor", reload=reload)
        async with app.run_test(size=(160, 40)) as pilot:
            await feed.queue.put(Notice("connected", "connected to ws://h/api/v1/contracts/monitor"))
            await feed.queue.put(Notice("reload", "not every event missed after 41 was replayed", count=0))
            await pilot.pause(0.3)
            # The table is the snapshot's, the log says why, and live events go on moving it
            assert reloads == [1]
            assert list(app.table.rows) == [CID2]
            assert cells(app, CID2)[:3] == ["from the snapshot 9a7d0c55", "blocked", "execute"]
            assert app.event_log.lines[-1] == "-- not every event missed after 41 was replayed: reloading the table"
            await feed.queue.put(
                _event("status_changed", {"old_status": "blocked", "new_status": "active"}, id="99", cid=CID2)
            )
            await pilot.pause(0.2)
            assert cells(app, CID2)[1] == "active"
            await pilot.press("q")
        assert app.error is None

    asyncio.run(scenario())


def test_the_dashboard_follows_the_live_stack(stack: Stack) -> None:
    owner = new_owner(stack)
    existing = owner.create("loaded at start")

    async def scenario() -> None:
        flt = Filter(include_heartbeats=True)
        contracts, stale = load_contracts(connect(stack.base_url, owner.token), None, None, False)
        board = Board()
        board.load(contracts, stale)
        url = monitor_url(stack.base_url)
        app = MonitorApp(
            lambda: events(url, owner.token, flt),
            board,
            lookup=HttpLookup(stack.base_url, owner.token).get,
            source_name=url,
            filter_text=describe(flt, Selection()),
        )
        async with app.run_test(size=(160, 40)) as pilot:
            assert cells(app, existing)[:3] == [f"loaded at start {existing[:8]}", "created", "plan"]
            await _until(pilot, lambda: app.connection.startswith("● connected"))
            # When a contract is created and a supervisor starts on it and reports progress
            created = await asyncio.to_thread(owner.create, "made while watching")
            daemon = await asyncio.to_thread(owner.post, "/daemons", {"name": f"d-{uuid.uuid4().hex[:6]}"})
            sup = await asyncio.to_thread(owner.post, f"/contracts/{created}/supervisor", {"daemon_id": daemon["id"]})
            beat = {
                "task_id": sup["supervisor"]["task_id"],
                "state": "working",
                "phase": "plan",
                "current_activity": "reading the spec",
                "progress": 40,
                "timestamp": datetime.now(UTC).isoformat(),
            }
            await asyncio.to_thread(owner.post, f"/contracts/{created}/supervisor/heartbeat", beat)
            await asyncio.to_thread(owner.status, existing, "paused", "lunch")
            # Then the table shows it all, live contracts first
            await _until(pilot, lambda: created in app.table.rows and cells(app, created)[3] == "working 40%")
            await _until(pilot, lambda: cells(app, existing)[1] == "paused")
            assert cells(app, created)[:5] == [
                f"made while watching {created[:8]}",
                "active",
                "plan",
                "working 40%",
                "reading the spec",
            ]
            # And the log has each event's line, as --format text prints it
            logged = await asyncio.to_thread(owner.logged, created)
            for event in logged:
                assert text_line(event) in app.event_log.lines
            assert f"  {existing[:8]}  status_changed  created → paused  (lunch)" in "\n".join(app.event_log.lines)
            await pilot.press("q")

    asyncio.run(scenario())


def test_the_dashboard_ends_with_the_error_when_the_token_is_refused(stack: Stack) -> None:
    async def scenario() -> MonitorApp:
        url = monitor_url(stack.base_url)
        app = MonitorApp(lambda: events(url, "mkm_not_a_token", Filter()), Board(), source_name=url)
        async with app.run_test() as pilot:
            await _until(pilot, lambda: app.error is not None)
        return app

    app = asyncio.run(scenario())
    assert app.return_code == 1
    assert str(app.error).startswith("UNAUTHORIZED: the monitor refused the token (HTTP 403)")


def test_the_dashboard_runs_in_a_real_terminal_for_its_duration(stack: Stack) -> None:
    owner = new_owner(stack)
    owner.create("on screen")
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAKIMA_")},
        "MAKIMA_API_URL": stack.base_url,
        "MAKIMA_TOKEN": owner.token,
        "MAKIMA_CLI_CONFIG": "/nonexistent/makima-cli.toml",
        "TERM": "xterm-256color",
        "COLUMNS": "140",
        "LINES": "40",
    }
    args = [sys.executable, "-m", "makima.cli.main", "contracts", "monitor", "--duration", "4"]
    proc = subprocess.Popen(args, stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    screen += os.read(main, 65536)
        assert proc.wait(timeout=10) == 0  # --format tui is the default on a terminal
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    text = screen.decode("utf-8", "replace")
    assert "makima contracts monitor" in text
    assert "on screen" in text
    assert "connected to" in text


async def _until(pilot: Any, ready: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError("the dashboard did not get there in time")
        await pilot.pause(0.1)


# --- The README's picture ----------------------------------------------------------------------------------


def screenshot(api_url: str, token: str, path: Path, settle: float = 8.0) -> None:
    """The dashboard over a running stack, as SVG."""

    async def take() -> None:
        flt = Filter(include_heartbeats=True)
        contracts, stale = load_contracts(connect(api_url, token), None, None, False)
        board = Board()
        board.load(contracts, stale)
        url = monitor_url(api_url)
        app = MonitorApp(
            lambda: events(url, token, flt),
            board,
            lookup=HttpLookup(api_url, token).get,
            source_name=url,
            filter_text=describe(flt, Selection()),
        )
        async with app.run_test(size=(150, 36)) as pilot:
            await asyncio.sleep(settle)
            await pilot.pause()
            path.write_text(app.export_screenshot(title="makima contracts monitor"))

    asyncio.run(take())


if __name__ == "__main__":
    screenshot(os.environ["MAKIMA_API_URL"], os.environ["MAKIMA_TOKEN"], Path(sys.argv[1]))
