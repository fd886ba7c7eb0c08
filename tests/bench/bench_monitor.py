"""WebSocket fan-out on the local stack: N monitor connections, K events, the delivery latency of each.

Run it (it is a script, not a pytest test):

    .venv/bin/python -m tests.bench.bench_monitor [--connections 100,1000] [--events 50] [--interval 0.1]

It starts its own fresh database (a new ``makima_bench_<random>`` database on the DATABASE_URL server,
dropped at the end; without DATABASE_URL an embedded PostgreSQL in a temporary directory), migrates it,
creates an admin, an owner with a token and one active contract of the owner's, and raises this process's
RLIMIT_NOFILE to its hard limit (the stack inherits it). Then, for each N, on a fresh ``makima dev``
subprocess on that database:

1. N monitors connect to ``ws://127.0.0.1:PORT/api/v1/contracts/monitor?token=…`` (the ``websockets``
   asyncio client, all in this one process, ``--connect-concurrency`` handshakes at a time) with the
   owner's token, and each sends a filter and waits for ``{"type": "subscribed"}``. The filters take
   turns: ``{}`` (everything), ``{"contract_ids": [the contract]}``, ``{"statuses": ["active",
   "paused"]}``; every one of them matches every event of the run.
2. ``--warmup-events`` (not measured), then K events, one every ``--interval`` seconds: the contract is
   paused and resumed in turn through ``POST /api/v1/contracts/{id}/status`` (httpx, in the same event
   loop), each with a distinct ``reason`` that identifies the event in what the monitors receive.
3. The delivery latency of each (event, connection) is the time the message was read from the socket
   minus the time the triggering HTTP request was sent, both on this process's monotonic clock. The
   delivered fraction counts distinct events per connection (ids de-duplicate) and must be 100%.

The client (all N connections and the trigger) shares the machine's cores with the stack and PostgreSQL,
so every figure includes the client's own queueing: the time a message waited in this process before
its reader ran. CPU seconds of the three during the events window are printed, with what anything
else on the machine used meanwhile, and the load average (``uptime``) before and after.

``--replay`` runs the other benchmark instead (issue 13): one resume over a long log. It loads
``--replay-events`` (200,000) events of 100 active contracts (every tenth a status change between active
and paused) straight into a fresh database, then times, for a resume from ``last_event_id: "0"`` whose
filter matches nothing (an admin's, ``statuses: ["archived"]``, and an owner's of the same):

- the raw SQL rate: every row of the log read by id, what a replay that filters in Python must read;
- before: the replay of issue 12 (read every page of the log, filter in Python), kept here as ``legacy_replay``;
- after, the default bounds: more events than ``replay_max_scanned`` since the resume point, so the
  answer is ``reload`` at once;
- after, the bounds lifted: the whole log replayed with the filter in SQL (the index-driven statements).

The four fan-out changes this benchmark led to (docs/performance.md, "The changes") were first measured
here as a patched-in prototype; they are the product's code now, so the prototype variant is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.version import version as websockets_version

from makima.config import MonitorConfig
from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.models import User
from makima.domain.monitor import Subscriber, from_log, public, route
from makima.domain.principals import Principal, Role
from makima.domain.statuses import ContractStatus
from makima.local.monitor import MONITOR_PATH
from makima.services import auth
from makima.services import contracts as contracts_svc
from makima.services import monitor as monitor_svc
from tests.bench.bench_contracts import bench_database, percentile
from tests.bench.bench_dashboard import CpuWindow, machine_facts, uptime
from tests.bench.bench_heartbeats import LocalStack, start_stack

API = "/api/v1"
BAR_CONNECTIONS = 1_000
BAR_P99_MS = 500.0


# --------------------------------------------------------------------------------------------------
# Setup


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children, the stack among them, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def open_files_limit(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                parts = line.split()
                return f"{parts[3]} soft / {parts[4]} hard"
    except OSError:
        pass
    return "?"


@dataclass
class World:
    owner_token: str
    contract_id: str


def bench_owner(db: PooledDatabase) -> tuple[Principal, User, auth.IssuedToken]:
    """A fresh database's admin, the owner the bench works as, and a user token of that owner."""
    with transaction(db) as conn:
        secret = auth.ensure_admin(conn, name="bench-admin", token=f"mkm_bench_{uuid.uuid4().hex}")
        assert secret is not None
        admin = auth.resolve_with(conn, secret)
    owner = auth.create_user(db, admin, name="bench-owner", role=Role.USER)
    return admin, owner, auth.issue_token(db, admin, owner.id, name="bench-monitor", kind="user")


def build_world(url: str) -> World:
    db = PooledDatabase(url, min_size=1, max_size=1)
    try:
        _, _, issued = bench_owner(db)
        principal = auth.resolve(db, issued.secret)
        contract = contracts_svc.create_contract(
            db, principal, name="bench fan-out", description="", contract_type="simple", phase_guard=False
        )
        contracts_svc.change_status(db, principal, contract.id, status=ContractStatus.ACTIVE)
    finally:
        db.close()
    return World(issued.secret, str(contract.id))


# --------------------------------------------------------------------------------------------------
# One round: N connections, K events


@dataclass
class Round:
    connections: int
    events: int
    variant: str = "current"
    connect_s: float = 0.0
    extensions: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    per_event_last_ms: list[float] = field(default_factory=list)  # when the last connection got it, in order
    slowest: list[tuple[float, int]] = field(default_factory=list)  # (last ms, event number) of the slowest
    warmup_ms: list[float] = field(default_factory=list)
    delivered: int = 0  # distinct (event, connection) pairs received
    expected: int = 0
    duplicates: int = 0
    unexpected: int = 0  # messages that were not one of the run's events
    unexpected_types: dict[str, int] = field(default_factory=dict)
    post_ms: list[float] = field(default_factory=list)
    window_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    stack_limits: str = ""

    @property
    def fraction(self) -> float:
        return self.delivered / self.expected if self.expected else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


MARK = "bench-"  # the reasons of the run's status changes start with it

FILTERS: tuple[dict[str, Any], ...] = ({}, {"contract_ids": ["@CONTRACT@"]}, {"statuses": ["active", "paused"]})


def _filter(i: int, contract_id: str) -> str:
    f = FILTERS[i % len(FILTERS)]
    if "contract_ids" in f:
        f = {"contract_ids": [contract_id]}
    return json.dumps(f)


async def _open(url: str, message: str, sem: asyncio.Semaphore, timeout: float) -> ClientConnection:
    async with sem:
        # No client pings (browsers send none); the server's keepalive pings are answered by the library.
        ws = await connect(url, open_timeout=timeout, ping_interval=None, max_size=2**20)
        await ws.send(message)
        while True:
            answer = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if answer.get("type") == "subscribed":
                return ws
            if answer.get("type") == "error":
                raise RuntimeError(f"filter refused: {answer}")


async def _read(ws: ClientConnection, arrivals: list[tuple[float, str | bytes]], counter: list[int]) -> None:
    try:
        async for raw in ws:
            arrivals.append((time.monotonic(), raw))  # the clock first: parsing happens after the run
            if MARK in (raw if isinstance(raw, str) else raw.decode()):
                counter[0] += 1
    except websockets.ConnectionClosed:
        pass


async def run_round(
    stack: LocalStack,
    world: World,
    url: str,
    *,
    n: int,
    k: int,
    warmup: int,
    interval: float,
    concurrency: int,
    settle: float,
) -> Round:
    result = Round(connections=n, events=k, expected=n * k)
    ws_url = stack.base_url.replace("http://", "ws://") + f"{MONITOR_PATH}?token={world.owner_token}"
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    conns = await asyncio.gather(*(_open(ws_url, _filter(i, world.contract_id), sem, 120.0) for i in range(n)))
    result.connect_s = time.perf_counter() - t0
    result.extensions = ", ".join(sorted({type(e).__name__ for c in conns for e in c.protocol.extensions})) or "none"
    arrivals: list[list[tuple[float, str | bytes]]] = [[] for _ in conns]
    counter = [0]
    readers = [asyncio.create_task(_read(ws, arrivals[i], counter)) for i, ws in enumerate(conns)]
    sent: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {world.owner_token}"}
    async with httpx.AsyncClient(base_url=stack.base_url + API, headers=headers, timeout=30) as http:
        (await http.get("/health")).raise_for_status()  # the HTTP connection, before the clock
        window = CpuWindow(url, stack.process.pid)
        window.begin()
        start = time.monotonic()
        for j in range(warmup + k):
            target = "paused" if j % 2 == 0 else "active"
            reason = f"{MARK}{j}"
            due = start + j * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            t_send = time.monotonic()
            sent[reason] = t_send
            r = await http.post(f"/contracts/{world.contract_id}/status", json={"status": target, "reason": reason})
            if r.status_code != 200:
                raise RuntimeError(f"status change {j}: HTTP {r.status_code} {r.text[:300]}")
            if j >= warmup:
                result.post_ms.append((time.monotonic() - t_send) * 1000)
        deadline = time.monotonic() + settle
        while counter[0] < n * (warmup + k) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        result.cpu = window.end()
        result.window_s = result.cpu["wall"]
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)

    async def close(ws: ClientConnection) -> None:
        async with sem:
            await ws.close()

    await asyncio.gather(*(close(ws) for ws in conns), return_exceptions=True)

    # Parse what arrived: one latency per distinct (event, connection).
    measured = {f"{MARK}{j}" for j in range(warmup, warmup + k)}
    last: dict[str, float] = {}
    for per_conn in arrivals:
        seen: set[str] = set()
        for t, raw in per_conn:
            msg = json.loads(raw)
            data = msg.get("data") or {}
            reason = str(data.get("reason")) if msg.get("type") == "status_changed" else ""
            if reason not in sent or msg.get("contract_id") != world.contract_id:
                result.unexpected += 1
                result.unexpected_types[str(msg.get("type"))] = result.unexpected_types.get(str(msg.get("type")), 0) + 1
                continue
            if reason in seen:
                result.duplicates += 1
                continue
            seen.add(reason)
            ms = (t - sent[reason]) * 1000
            if reason in measured:
                result.latencies_ms.append(ms)
                result.delivered += 1
                last[reason] = max(last.get(reason, 0.0), ms)
            else:
                result.warmup_ms.append(ms)
    order = sorted(last, key=lambda r: int(r.removeprefix(MARK)))
    result.per_event_last_ms = [last[r] for r in order]
    result.slowest = sorted(((last[r], int(r.removeprefix(MARK)) - warmup) for r in order), reverse=True)[:3]
    return result


def wait_for_outbox(url: str, timeout: float = 30.0) -> None:
    """Until the stack's pump has published what setup logged (it sweeps a second after start): the
    monitors must see only the run's events."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM contract_events WHERE published_at IS NULL").fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.1)
    raise RuntimeError("the stack did not publish the outbox")


def run(stack: LocalStack, world: World, url: str, args: argparse.Namespace, n: int) -> Round:
    wait_for_outbox(url)
    result = asyncio.run(
        run_round(
            stack,
            world,
            url,
            n=n,
            k=args.events,
            warmup=args.warmup_events,
            interval=args.interval,
            concurrency=args.connect_concurrency,
            settle=args.settle,
        )
    )
    result.stack_limits = open_files_limit(stack.process.pid)
    return result


# --------------------------------------------------------------------------------------------------
# Reporting


def print_rounds(rounds: Sequence[Round], args: argparse.Namespace) -> None:
    print(
        f"Delivery latency in ms = receive time - time the triggering POST was sent, per (event, connection); "
        f"{args.events} events, one every {args.interval * 1000:.0f} ms, after {args.warmup_events} warm-up events. "
        "last = when the last connection had the event (p50 / max over the events). CPU seconds over the events "
        "window: client = this process (every connection and the trigger), stack = makima dev, postgres = this "
        "database's backends; other = cores anything else kept busy meanwhile."
    )
    head = " | ".join(
        (
            f"{'variant':<9} {'N':>5}",
            f"{'delivered':>9}",
            f"{'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}",
            f"{'last p50':>8} {'max':>7}",
            f"{'POST p50':>8}",
            f"{'connect':>7}",
            f"CPU s: {'client':>6} {'stack':>6} {'postgres':>8}",
            f"{'other':>5}",
        )
    )
    print(head)
    print("-" * len(head))
    nan = float("nan")
    for r in rounds:
        c = r.cpu
        cells = (
            f"{r.variant:<9} {r.connections:5,}",
            f"{r.fraction * 100:8.2f}%",
            f"{r.p(0.5):7.1f} {r.p(0.95):7.1f} {r.p(0.99):7.1f} {max(r.latencies_ms, default=nan):7.1f}",
            f"{percentile(r.per_event_last_ms, 0.5):8.1f} {max(r.per_event_last_ms, default=nan):7.1f}",
            f"{percentile(r.post_ms, 0.5):8.1f}",
            f"{r.connect_s:6.1f}s",
            f"CPU s: {c.get('client', 0):6.2f} {c.get('stack', 0):6.2f} {c.get('postgres', 0):8.2f}",
            f"{c.get('other_cores', 0):5.2f}",
        )
        print(" | ".join(cells))
    for r in rounds:
        events = max(1, r.events)
        extra = f", {r.duplicates} duplicates" if r.duplicates else ""
        extra += f", {r.unexpected} other messages {r.unexpected_types}" if r.unexpected else ""
        print(
            f"  {r.variant}, N={r.connections:,}: {r.delivered:,} of {r.expected:,} deliveries{extra}; "
            f"warm-up events p50 {percentile(r.warmup_ms, 0.5):.1f} ms; CPU per event: stack "
            f"{c_ms(r, 'stack', events)} ms, client {c_ms(r, 'client', events)} ms, postgres "
            f"{c_ms(r, 'postgres', events)} ms; slowest events (number: last ms) "
            f"{', '.join(f'{i}: {ms:.0f}' for ms, i in r.slowest)}; connections opened in {r.connect_s:.1f} s "
            f"({r.connections / r.connect_s:,.0f}/s); extensions: {r.extensions}; the stack's open files limit: "
            f"{r.stack_limits}"
        )


def c_ms(r: Round, key: str, events: int) -> str:
    return f"{r.cpu.get(key, 0.0) * 1000 / events:.1f}"


# --------------------------------------------------------------------------------------------------
# Replay: one resume over a long log (issue 13)


class Discard:
    """A ``Sender`` that keeps only what it was given, by type."""

    def __init__(self) -> None:
        self.messages: list[Mapping[str, Any]] = []

    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]:
        for messages in deliveries.values():
            self.messages.extend(messages)
        return set()

    def close(self, connection_ids: Sequence[str], error: Exception) -> set[str]:
        return set(connection_ids)


def load_log(url: str, events: int) -> tuple[uuid.UUID, uuid.UUID]:
    """``events`` events of 100 active contracts of one owner, published (so no pump touches them);
    (admin user id, owner id)."""
    db = PooledDatabase(url, min_size=1, max_size=1)
    try:
        admin, owner, issued = bench_owner(db)
        owner_principal = auth.resolve(db, issued.secret)
        ids = []
        for i in range(100):
            c = contracts_svc.create_contract(
                db, owner_principal, name=f"replay {i}", description="", contract_type="simple", phase_guard=False
            )
            contracts_svc.change_status(db, owner_principal, c.id, status=ContractStatus.ACTIVE)
            ids.append(c.id)
        with transaction(db) as conn:
            conn.execute(
                """
                INSERT INTO contract_events (contract_id, owner_id, type, payload, actor, published_at)
                SELECT (%(ids)s::uuid[])[1 + g %% 100], %(owner)s,
                       CASE WHEN g %% 10 = 0 THEN 'status_changed' ELSE 'task_spawned' END,
                       CASE WHEN g %% 10 = 0
                            THEN jsonb_build_object('old_status', 'active', 'new_status', 'paused', 'reason', 'bench')
                            ELSE jsonb_build_object('task_id', gen_random_uuid()::text, 'name', 'bench task ' || g)
                       END,
                       'bench', now()
                  FROM generate_series(1, %(n)s) g
                """,
                {"ids": ids, "owner": owner.id, "n": events},
            )
            conn.execute("UPDATE contract_events SET published_at = now() WHERE published_at IS NULL")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE contract_events")
            conn.execute("ANALYZE contracts")
        return admin.user_id, owner.id
    finally:
        db.close()


def legacy_replay(db: PooledDatabase, connection_id: str, after: int, sender: Discard, page: int = 500) -> int:
    """The replay of issue 12, for the "before" figure: every page of the log the connection may read,
    filtered in Python with the broadcaster's rule; at most 5,000 sent."""
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, connection_id)
    assert row is not None
    subscriber = Subscriber.from_row(row)
    owner = None if row["is_admin"] else row["owner_id"]
    cursor, sent = after, 0
    while sent < 5_000:
        with transaction(db) as conn:
            rows = monitor_sql.events_after(conn, owner, cursor, page, row["contract_ids"])
            if not rows:
                break
            events = [from_log(r) for r in rows]
            statuses = monitor_sql.contract_statuses(
                conn, sorted({e["contract_id"] for e in events if e["contract_id"]})
            )
        cursor = int(rows[-1]["id"])
        mine = route(events, [subscriber], statuses).get(connection_id, [])
        if mine:
            sender.send({connection_id: [public(e) for e in mine]})
            sent += len(mine)
    return sent


def _timed(run: Any, repeat: int) -> tuple[float, Any]:
    """The best of ``repeat`` runs, in ms, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best, result


def run_replay_bench(url: str, events: int, repeat: int) -> None:
    print(f"loading {events:,} events ...", flush=True)
    t0 = time.perf_counter()
    admin_id, owner_id = load_log(url, events)
    print(f"  loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    db = PooledDatabase(url, min_size=1, max_size=2)
    try:
        with transaction(db) as conn:
            head = monitor_sql.log_head(conn)
            admin_token = conn.execute("SELECT id FROM api_tokens WHERE user_id = %s LIMIT 1", (admin_id,)).fetchone()
            owner_token = conn.execute("SELECT id FROM api_tokens WHERE user_id = %s LIMIT 1", (owner_id,)).fetchone()
        assert admin_token is not None
        assert owner_token is not None

        def raw_sql() -> int:
            with transaction(db) as conn:
                return len(
                    conn.execute(
                        "SELECT id, contract_id, owner_id, type, payload, actor, created_at FROM contract_events "
                        "WHERE id > 0 ORDER BY id"
                    ).fetchall()
                )

        raw_ms, raw_rows = _timed(raw_sql, repeat)
        print()
        print(f"Replay: a resume from 0 over {head:,} logged events, filter statuses=[archived] (matches nothing)")
        print(
            f"  raw SQL: every row of the log read by id: {raw_rows:,} rows in {raw_ms:.0f} ms "
            f"({raw_rows / raw_ms * 1000:,.0f} rows/s)"
        )
        default = MonitorConfig()
        lifted = MonitorConfig(replay_max_scanned=10_000_000, replay_deadline_seconds=600)
        for who, user, token, is_admin in (
            ("admin", admin_id, admin_token["id"], True),
            ("owner", owner_id, owner_token["id"], False),
        ):
            cid = f"bench-replay-{who}"
            with transaction(db) as conn:
                monitor_sql.add_connection(conn, cid, user, is_admin=is_admin, endpoint="bench:replay", token_id=token)
                monitor_sql.set_filter(
                    conn,
                    cid,
                    contract_ids=None,
                    statuses=["archived"],
                    include_stale=True,
                    include_heartbeats=False,
                    resuming=True,
                )
            before_ms, before_sent = _timed(lambda cid=cid: legacy_replay(db, cid, 0, Discard()), repeat)

            def bounded(limits: MonitorConfig, cid: str = cid) -> str:
                sender = Discard()
                monitor_svc.replay(db, cid, 0, sender, sender, limits=limits)
                return str(sender.messages[-1]["type"])

            after_ms, after_answer = _timed(lambda: bounded(default), repeat)
            sql_ms, sql_answer = _timed(lambda: bounded(lifted), repeat)
            print(f"  {who}: before (filter in Python): {before_ms:,.0f} ms, {before_sent} sent")
            print(
                f"  {who}: after, default bounds ({default.replay_max_scanned:,} rows): "
                f"{after_ms:,.1f} ms, answer {after_answer!r}"
            )
            print(
                f"  {who}: after, bounds lifted (filter in SQL over the whole log): {sql_ms:,.1f} ms, "
                f"answer {sql_answer!r}"
            )
        with transaction(db) as conn:
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
                "SELECT id FROM contract_events e WHERE e.id > 0 AND e.type = 'status_changed' "
                f"AND {monitor_sql.STATUS_MOVES} && ARRAY['archived']::text[] ORDER BY e.id LIMIT 500"
            ).fetchall()
        print("  plan of the status-moves branch:")
        for line in plan:
            print(f"    {line['QUERY PLAN']}")
    finally:
        db.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_monitor", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", default="100,1000", help="comma-separated N to run (default 100,1000)")
    parser.add_argument("--events", type=int, default=50, help="measured events per round (default 50)")
    parser.add_argument("--warmup-events", type=int, default=2, help="events before the measured ones (default 2)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between events (default 0.1)")
    parser.add_argument("--connect-concurrency", type=int, default=20, help="handshakes at a time (default 20)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait for the last deliveries")
    parser.add_argument("--replay", action="store_true", help="run the replay benchmark (issue 13) instead")
    parser.add_argument("--replay-events", type=int, default=200_000, help="events in the log (default 200,000)")
    parser.add_argument("--repeat", type=int, default=3, help="replay runs per figure, the best kept (default 3)")
    args = parser.parse_args(argv)
    if args.replay:
        with bench_database() as (url, where):
            migrate(url)
            print(f"database ready ({where})", flush=True)
            run_replay_bench(url, args.replay_events, args.repeat)
        return 0
    try:
        ns = [int(x) for x in args.connections.split(",") if x.strip()]
    except ValueError:
        parser.error("--connections takes comma-separated integers")
    if not ns or min(ns) < 1 or args.events < 1 or args.interval < 0 or args.connect_concurrency < 1:
        parser.error("--connections, --events and --connect-concurrency must be positive")

    started = time.perf_counter()
    # The N monitors share one owner token by design (the fan-out is measured, not the per-token limits
    # of issue 13): the stacks this starts inherit the limits switched off, unless set otherwise.
    os.environ.setdefault("MAKIMA_MONITOR__MAX_CONNECTIONS_PER_TOKEN", "0")
    os.environ.setdefault("MAKIMA_MONITOR__MESSAGES_PER_SECOND", "0")
    soft, hard = raise_nofile()
    up_before = uptime()
    print(f"uptime at start: {up_before}", flush=True)
    print(f"RLIMIT_NOFILE raised to {soft} (hard {hard})", flush=True)
    rounds: list[Round] = []
    with bench_database() as (url, where), tempfile.TemporaryDirectory(prefix="makima-bench-mon-") as tmp:
        t0 = time.perf_counter()
        applied = migrate(url)
        print(f"database ready ({where}), {len(applied)} migrations in {time.perf_counter() - t0:.1f} s", flush=True)
        world = build_world(url)
        facts = machine_facts(url, where)
        for n in ns:
            print(f"N={n:,}: starting makima dev ...", flush=True)
            stack = start_stack(url, Path(tmp))
            try:
                print(f"  connecting, then {args.warmup_events} + {args.events} events ...", flush=True)
                r = run(stack, world, url, args, n)
            finally:
                stack.stop()
            rounds.append(r)
            print(
                f"  delivered {r.fraction * 100:.2f}%, p50 {r.p(0.5):.1f} ms, p99 {r.p(0.99):.1f} ms "
                f"(uptime: {uptime()})",
                flush=True,
            )
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM monitor_connections").fetchone()
            leftover = int(row[0]) if row else 0
    up_after = uptime()
    print()
    print("Machine")
    for key, value in facts.items():
        if key != "settings":
            print(f"  {key:<28} {value}")
    print(f"  {'client':<28} websockets {websockets_version} asyncio client, httpx {httpx.__version__}")
    print(f"  {'RLIMIT_NOFILE':<28} {soft} soft / {hard} hard (this process; the stack inherits it)")
    print(f"  {'uptime at start':<28} {up_before}")
    print(f"  {'uptime at end':<28} {up_after}")
    print(f"  {'monitor rows left':<28} {leftover} (connections the stacks did not forget on close)")
    print()
    print_rounds(rounds, args)
    print()
    contended = [r for r in rounds if r.cpu.get("other_cores", 0.0) > 0.3]
    if contended:
        worst = max(r.cpu["other_cores"] for r in contended)
        print(
            f"WARNING: something else kept up to {worst:.2f} cores busy during {len(contended)} of the rounds: their "
            "latencies include that contention; rerun when the machine is quiet."
        )
    print(f"The bar: {BAR_CONNECTIONS:,} connections, p99 < {BAR_P99_MS:.0f} ms, 100% delivered:")
    for r in rounds:
        met = r.p(0.99) < BAR_P99_MS and r.delivered == r.expected
        print(
            f"  {r.variant}, N={r.connections:,}: p99 {r.p(0.99):.1f} ms, delivered {r.fraction * 100:.2f}%: "
            f"{'met' if met else 'MISSED'}{'' if r.connections == BAR_CONNECTIONS else ' (not the bar size)'}"
        )
    print(f"total runtime {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
