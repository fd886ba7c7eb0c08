"""Heartbeat ingest: heartbeats per second through the Lambda handler, the local stack and raw SQL.

Run it (it is a script, not a pytest test):

    .venv/bin/python -m tests.bench.bench_heartbeats [--supervisors 1000] [--seconds 10] [--batch 100] [--workers 2]

It starts its own fresh database (a new ``makima_bench_<random>`` database on the DATABASE_URL server,
dropped at the end; without DATABASE_URL an embedded PostgreSQL in a temporary directory), migrates it,
creates an owner with a daemon token, one daemon per sender, and N contracts each with a started
supervisor (the first through the services, the rest cloned from it in SQL), and sends every supervisor
one heartbeat so that the timed runs are in the steady state (no state change, no event). Then, for a
fixed duration each, with one heartbeat per request and with batches:

- raw SQL: the ingest statement of ``makima.db.heartbeats`` from plain psycopg, one connection per
  process (autocommit: one round trip; and, one per request, inside BEGIN/COMMIT as the service runs it);
- the Lambda handler: ``functions/heartbeats/app.py``'s handler, one "container" per process (its own
  connection from DATABASE_URL, as ``lambda_support.runtime`` builds it), fed API Gateway HTTP API v2
  events with the Lambda authorizer's context filled in (so no token lookup);
- the local stack: ``makima dev`` as a subprocess on this database, driven over HTTP with httpx from
  several processes and threads, with the daemon's bearer token.

Each sender owns its own daemon and its own slice of the supervisors (as a real daemon does), so senders
never wait on each other's row locks. Every timestamp is "now". Statements and round trips are counted
on the wire: a short extra pass of each path goes through a PostgreSQL protocol proxy that counts the
messages the client sends (a round trip is a Sync or a simple Query, each of which waits for the server's
ReadyForQuery); the timed runs connect directly. Server statistics (transactions, rows updated, HOT
updates, WAL) and CPU time (the senders, the stack, the PostgreSQL processes) come from the timed runs.

The machine's cores are shared by the senders, the stack and PostgreSQL, and by anything else running:
each run prints how many cores the bench kept busy and how many something else did, and a "ceiling",
the rate its CPU cost per heartbeat allows with every core busy. Runs of the same code on a quiet machine
still differ by up to about 30%; compare several. Other options: ``--http-threads`` (connections per
client process for the stack), ``--paths raw,lambda,http`` (a subset), ``--no-count`` (skip the counting
passes).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from makima.db import heartbeats as heartbeats_sql
from makima.db.connection import PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.principals import Principal, Role
from makima.services import auth, daemons
from makima.services import contracts as contracts_svc
from makima.services import supervisors as supervisors_svc
from tests.bench.bench_contracts import bench_database, percentile

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"
STATE = "working"  # every timed heartbeat reports the state the priming heartbeat set: no event
ACTIVITY = "bench: steady state"
PROGRESS = 50
TS = "@TS@"  # where a request's "now" goes in a prepared body
TARGET_SINGLE = 1_000  # the issue's bar, heartbeats/s on 2 cores
TARGET_BATCH = 10_000
WARMUP_REQUESTS = 10  # per sender, before the clock starts (connect, prepare statements, warm caches)
COUNT_REQUESTS = 200  # requests of a counting pass, one heartbeat each (batched passes send fewer)
ENV = {
    # The functions' environment, minus what only AWS has: no X-Ray, no per-request log lines.
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_SERVICE_NAME": "makima-contracts",
    "POWERTOOLS_METRICS_NAMESPACE": "Makima",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "AWS_LAMBDA_FUNCTION_NAME": "makima-bench-heartbeats",
    "AWS_DEFAULT_REGION": "eu-west-1",
    # One daemon token here sends far more than a daemon does (the default budget is 200 requests/s): a
    # budget the bench cannot exhaust, leased in slices of 100 like the default daemon limit, so the
    # limiter's cost is in the figures but it never refuses (docs/performance.md, "Per-token rate limits").
    "MAKIMA_RATE_LIMITS__DAEMON_PER_SECOND": "100000",
    "MAKIMA_RATE_LIMITS__DAEMON_BURST": "1000000",
    "MAKIMA_RATE_LIMITS__SLICE_SECONDS": "0.001",
}


# --------------------------------------------------------------------------------------------------
# The data: an owner, a daemon token, daemons, N supervised contracts


@dataclass(frozen=True)
class Supervisor:
    task_id: str
    contract_id: str


@dataclass
class World:
    owner_id: str
    token_id: str
    token: str  # the daemon token's secret (the local stack checks it on every request)
    daemons: list[str]
    supervisors: list[Supervisor]
    phase: str
    service_s: float  # the template contract and supervisor through the services
    clone_s: float
    prime_s: float


def _columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        """
        SELECT column_name FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = %s AND is_generated = 'NEVER'
         ORDER BY ordinal_position
        """,
        (table,),
    ).fetchall()
    return [r["column_name"] for r in rows]


def _clone(conn: psycopg.Connection[Any], table: str, key: str, template: str, overrides: dict[str, str]) -> int:
    """INSERT one copy of ``table``'s template row per row of bench_map, with ``overrides`` (column ->
    SQL expression over ``m``, the map row) replacing the template's values."""
    cols = _columns(conn, table)
    values = [sql.SQL(overrides[c]) if c in overrides else sql.SQL("t.{}").format(sql.Identifier(c)) for c in cols]
    statement = sql.SQL("INSERT INTO {table} ({cols}) SELECT {values} FROM {table} t, bench_map m WHERE t.{key} = %s")
    cur = conn.execute(
        statement.format(
            table=sql.Identifier(table),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
            values=sql.SQL(", ").join(values),
            key=sql.Identifier(key),
        ),
        (template,),
    )
    return cur.rowcount


def _heartbeat_rows(sups: Sequence[Supervisor], phase: str, state: str) -> list[dict[str, Any]]:
    """Rows for ``heartbeats_sql.ingest`` (the Heartbeat fields plus contract_id), timestamp unset."""
    return [
        {
            "task_id": uuid.UUID(s.task_id),
            "contract_id": uuid.UUID(s.contract_id),
            "state": state,
            "phase": phase,
            "current_activity": ACTIVITY,
            "progress": PROGRESS,
            "pending_task_ids": [],
            "timestamp": None,
            "generation": None,
        }
        for s in sups
    ]


def build_world(url: str, n_supervisors: int, n_daemons: int) -> World:
    db = PooledDatabase(url, min_size=1, max_size=2)
    try:
        t0 = time.perf_counter()
        with transaction(db) as conn:
            admin_secret = auth.ensure_admin(conn, name="bench-admin", token=f"mkm_bench_{uuid.uuid4().hex}")
            assert admin_secret is not None
            admin = auth.resolve_with(conn, admin_secret)
        owner_user = auth.create_user(db, admin, name="bench-owner", role=Role.USER)
        issued = auth.issue_token(db, admin, owner_user.id, name="bench-daemon", kind="daemon")
        daemon_principal = auth.resolve(db, issued.secret)
        owner = Principal(user_id=owner_user.id, role=Role.USER)
        daemon_ids = [
            str(
                daemons.register(
                    db, daemon_principal, name=f"bench-daemon-{k}", hostname=f"host-{k}", capacity=10000
                ).id
            )
            for k in range(n_daemons)
        ]
        contract = contracts_svc.create_contract(
            db, owner, name="bench supervised 0", description="", contract_type="simple", phase_guard=False
        )
        started = supervisors_svc.start_supervisor(db, owner, contract.id, daemon_id=uuid.UUID(daemon_ids[0]))
        template_task = str(started.supervisor.task_id)
        phase = str(started.supervisor.phase)
        t1 = time.perf_counter()
        with transaction(db) as conn:
            conn.execute(
                """
                CREATE TEMP TABLE bench_map ON COMMIT DROP AS
                SELECT i, gen_random_uuid() AS contract_id, gen_random_uuid() AS task_id,
                       (%s::uuid[])[1 + i %% %s] AS daemon_id
                  FROM generate_series(1, %s) AS i
                """,
                (daemon_ids, n_daemons, n_supervisors - 1),
            )
            _clone(
                conn, "contracts", "id", str(contract.id), {"id": "m.contract_id", "name": "'bench supervised ' || m.i"}
            )
            _clone(
                conn,
                "tasks",
                "id",
                template_task,
                {"id": "m.task_id", "contract_id": "m.contract_id", "daemon_id": "m.daemon_id"},
            )
            _clone(
                conn,
                "supervisor_states",
                "task_id",
                template_task,
                {"task_id": "m.task_id", "contract_id": "m.contract_id", "daemon_id": "m.daemon_id"},
            )
        # Hourly partitions ahead, as the scheduled retention function keeps them on AWS.
        supervisors_svc.maintain_heartbeat_partitions(db)
        t2 = time.perf_counter()
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT task_id::text, contract_id::text FROM supervisor_states ORDER BY created_at, task_id"
            ).fetchall()
            sups = [Supervisor(r["task_id"], r["contract_id"]) for r in rows]
            # Every supervisor's first heartbeat (initializing -> working): the timed ones change nothing.
            now = datetime.now(UTC)
            for i in range(0, len(sups), 1000):
                chunk = _heartbeat_rows(sups[i : i + 1000], phase, STATE)
                for r in chunk:
                    r["timestamp"] = now
                with conn.transaction():
                    heartbeats_sql.ingest(conn, chunk, owner_user.id)
            conn.execute("VACUUM (ANALYZE)")
        t3 = time.perf_counter()
    finally:
        db.close()
    assert issued.token.id is not None
    return World(
        owner_id=str(owner_user.id),
        token_id=str(issued.token.id),
        token=issued.secret,
        daemons=daemon_ids,
        supervisors=sups,
        phase=phase,
        service_s=t1 - t0,
        clone_s=t2 - t1,
        prime_s=t3 - t2,
    )


# --------------------------------------------------------------------------------------------------
# Counting statements and round trips on the wire


def _label(query: str) -> str:
    """A short name for a statement the client sent."""
    text = " ".join(query.split())
    if not text:
        return "empty query (the pool's connection check)"
    if text.startswith("WITH input AS"):
        return "heartbeat ingest (the CTE statement)"
    if "rate_limit_buckets" in text:
        return "rate-limit lease (one per slice)"
    if "api_tokens" in text:
        return "token lookup (bearer auth)"
    if text.startswith("UPDATE daemons"):
        return "daemon touch"
    if "contract_events" in text:
        return "event append"
    word = text.split(" ", 1)[0].upper()
    if word in ("BEGIN", "COMMIT", "ROLLBACK"):
        return word
    return text[:60]


@dataclass
class WireCounts:
    round_trips: int = 0
    statements: Counter[str] = field(default_factory=Counter)
    parses: int = 0  # Parse messages: statements planned again (unprepared) or being prepared

    def copy(self) -> WireCounts:
        return WireCounts(self.round_trips, Counter(self.statements), self.parses)

    def __sub__(self, other: WireCounts) -> WireCounts:
        diff = Counter(self.statements)
        diff.subtract(other.statements)
        return WireCounts(self.round_trips - other.round_trips, +diff, self.parses - other.parses)

    @property
    def total(self) -> int:
        return sum(self.statements.values())


class WireCounter:
    """A PostgreSQL protocol proxy on a Unix socket that counts what clients send upstream.

    Frontend messages, as psycopg sends them: a simple Query ('Q': BEGIN, COMMIT, the pool's empty
    check) or an extended-protocol group (Parse/Bind/Describe/Execute, closed by Sync). The client
    waits for the server's ReadyForQuery after each Query and each Sync, so those are the round
    trips; each Query and each Execute is a statement, named by its SQL text (kept from the Parse
    that created the prepared statement the portal was bound to).
    """

    def __init__(self, upstream_url: str) -> None:
        params = conninfo_to_dict(upstream_url)
        host = str(params.get("host") or "/tmp")
        port = int(params.get("port") or 5432)
        self._upstream: tuple[int, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else (socket.AF_INET, (host, port))
        )
        self._dir = tempfile.mkdtemp(prefix="makima-wire-")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(f"{self._dir}/.s.PGSQL.5432")
        self._listener.listen(64)
        self._lock = threading.Lock()
        self.counts = WireCounts()
        user = quote(str(params.get("user") or ""), safe="")
        password = quote(str(params.get("password") or ""), safe="")
        dbname = quote(str(params.get("dbname") or ""), safe="")
        self.url = f"postgresql://{user}:{password}@/{dbname}?host={quote(self._dir, safe='/')}&port=5432"
        threading.Thread(target=self._accept, name="wire-accept", daemon=True).start()

    def snapshot(self) -> WireCounts:
        with self._lock:
            return self.counts.copy()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(self._upstream[0], socket.SOCK_STREAM)
            try:
                server.connect(self._upstream[1])
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            threading.Thread(target=self._client_side, args=(client, server), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _client_side(self, client: socket.socket, server: socket.socket) -> None:
        buf = bytearray()
        started = False  # until the StartupMessage, messages carry no type byte
        prepared: dict[bytes, str] = {}
        portals: dict[bytes, str] = {}
        try:
            while data := client.recv(65536):
                server.sendall(data)
                buf += data
                while True:
                    if not started:
                        if len(buf) < 8 or len(buf) < int.from_bytes(buf[0:4], "big"):
                            break
                        n = int.from_bytes(buf[0:4], "big")
                        started = int.from_bytes(buf[4:8], "big") == 196608  # protocol 3.0
                        del buf[:n]
                        continue
                    if len(buf) < 5:
                        break
                    n = int.from_bytes(buf[1:5], "big")
                    if len(buf) < 1 + n:
                        break
                    kind, body = bytes(buf[0:1]), bytes(buf[5 : 1 + n])
                    del buf[: 1 + n]
                    self._message(kind, body, prepared, portals)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)

    def _message(self, kind: bytes, body: bytes, prepared: dict[bytes, str], portals: dict[bytes, str]) -> None:
        if kind == b"Q":
            with self._lock:
                self.counts.round_trips += 1
                self.counts.statements[_label(body.rstrip(b"\0").decode("utf-8", "replace"))] += 1
        elif kind == b"P":
            name, rest = body.split(b"\0", 1)
            prepared[name] = rest.split(b"\0", 1)[0].decode("utf-8", "replace")
            with self._lock:
                self.counts.parses += 1
        elif kind == b"B":
            portal, rest = body.split(b"\0", 1)
            portals[portal] = prepared.get(rest.split(b"\0", 1)[0], "?")
        elif kind == b"E":
            portal = body.split(b"\0", 1)[0]
            with self._lock:
                self.counts.statements[_label(portals.get(portal, "?"))] += 1
        elif kind == b"S":
            with self._lock:
                self.counts.round_trips += 1


# --------------------------------------------------------------------------------------------------
# CPU time and server statistics


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of a process, None when it is gone or unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _postgres_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of the postmaster and all its children (backends, writers) alive now."""
    if postmaster is None:
        return None
    total = _proc_cpu(postmaster) or 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _ppid(int(entry.name)) == postmaster:
            total += _proc_cpu(int(entry.name)) or 0.0
    return total


def _system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def find_postmaster(url: str) -> int | None:
    """The server's postmaster pid when it runs on this machine (read through a backend's parent)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        backend = int(row[0]) if row else -1
        return _ppid(backend) if Path(f"/proc/{backend}").exists() else None  # while the backend lives


@dataclass
class ServerStats:
    xact_commit: int
    xact_rollback: int
    tup_inserted: int
    contracts_upd: int
    contracts_hot: int
    states_upd: int
    states_hot: int
    heartbeat_rows: int
    events: int
    wal_bytes: int  # pg_stat_wal is server-wide: exact only when nothing else writes on the server
    wal_fpi: int  # full-page images: the first change of each page after a checkpoint

    def __sub__(self, other: ServerStats) -> ServerStats:
        return ServerStats(*(a - b for a, b in zip(vars(self).values(), vars(other).values(), strict=True)))


def server_stats(url: str) -> ServerStats:
    with psycopg.connect(url, autocommit=True) as conn:
        db = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        tables = {
            r[0]: (int(r[1]), int(r[2]))
            for r in conn.execute(
                """
                SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                 WHERE relname IN ('contracts', 'supervisor_states')
                """
            ).fetchall()
        }
        rows = conn.execute("SELECT count(*) FROM supervisor_heartbeats").fetchone()
        events = conn.execute("SELECT count(*) FROM contract_events").fetchone()
        wal = conn.execute("SELECT wal_bytes::bigint, wal_fpi FROM pg_stat_wal").fetchone()
    assert db is not None
    assert rows is not None
    assert events is not None
    return ServerStats(
        int(db[0]),
        int(db[1]),
        int(db[2]),
        *tables.get("contracts", (0, 0)),
        *tables.get("supervisor_states", (0, 0)),
        int(rows[0]),
        int(events[0]),
        int(wal[0]) if wal else 0,
        int(wal[1]) if wal else 0,
    )


def wait_for_disconnects(url: str, timeout: float = 10.0) -> None:
    """Until no other session is connected to the database (their statistics are flushed on exit)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if row is None or row[0] == 0:
                return
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# Senders: one sequential client each (a Lambda container, a raw connection, an HTTP connection)


@dataclass(frozen=True)
class Client:
    daemon_id: str
    supervisors: tuple[Supervisor, ...]


@dataclass(frozen=True)
class Job:
    path: str  # "raw", "raw-tx", "lambda", "http"
    mode: str  # "single" or "batch"
    url: str  # the database (raw, lambda)
    base_url: str  # the local stack (http)
    clients: tuple[Client, ...]  # one thread each
    batch: int
    seconds: float
    max_requests: int  # per client: the loop stops at this count or at the deadline
    warmup: int
    owner_id: str
    token_id: str
    token: str
    phase: str


@dataclass
class WorkerResult:
    latencies_ms: list[float] = field(default_factory=list)
    requests: int = 0
    heartbeats: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    error: str | None = None


def _single_body(sup: Supervisor, phase: str, with_contract: bool) -> str:
    hb: dict[str, Any] = {
        "task_id": sup.task_id,
        "state": STATE,
        "phase": phase,
        "current_activity": ACTIVITY,
        "progress": PROGRESS,
        "pending_task_ids": [],
        "timestamp": TS,
    }
    if with_contract:
        hb["contract_id"] = sup.contract_id
    return json.dumps(hb, separators=(",", ":"))


def _batch_bodies(job: Job, client: Client) -> list[str]:
    """Request bodies of ``job.batch`` heartbeats each, rotating through the client's supervisors."""
    sups = client.supervisors
    per = [_single_body(s, job.phase, with_contract=True) for s in sups]
    n_bodies = max(1, len(sups) // job.batch)
    bodies = []
    for b in range(n_bodies):
        items = [per[(b * job.batch + j) % len(sups)] for j in range(job.batch)]
        bodies.append('{"daemon_id":"' + client.daemon_id + '","heartbeats":[' + ",".join(items) + "]}")
    return bodies


def _now() -> str:
    return datetime.now(UTC).isoformat()


Sender = Callable[[int], int]  # request number -> heartbeats accepted; raises on anything else


@dataclass
class FakeContext:
    """What Powertools and Mangum read from the Lambda context object."""

    function_name: str = "makima-bench-heartbeats"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:makima-bench-heartbeats"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/makima-bench-heartbeats"
    log_stream_name: str = "2026/11/24/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def _load_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """``functions/heartbeats/app.py``'s handler, imported by file path as Lambda does."""
    path = ROOT / "functions" / "heartbeats" / "app.py"
    if path.exists():
        spec = importlib.util.spec_from_file_location("makima_function_heartbeats", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler: Callable[[dict[str, Any], Any], dict[str, Any]] = module.handler
        return handler
    from makima.api.routers import heartbeats
    from makima.lambda_support.http import make_http_handler

    return make_http_handler(heartbeats.router)


def _raw_sender(job: Job, client: Client, closers: list[Callable[[], None]]) -> Sender:
    conn = psycopg.connect(job.url, row_factory=dict_row, autocommit=True)
    closers.append(conn.close)
    owner = uuid.UUID(job.owner_id)
    rows = _heartbeat_rows(client.supervisors, job.phase, STATE)
    in_tx = job.path == "raw-tx"
    size = 1 if job.mode == "single" else job.batch

    def send(i: int) -> int:
        start = (i * size) % len(rows)
        chunk = [rows[(start + j) % len(rows)] for j in range(size)]
        now = datetime.now(UTC)
        for r in chunk:
            r["timestamp"] = now
        if in_tx:
            with conn.transaction():
                got = heartbeats_sql.ingest(conn, chunk, owner)
        else:
            got = heartbeats_sql.ingest(conn, chunk, owner)
        if len(got) != size:
            raise RuntimeError(f"raw ingest matched {len(got)} of {size} heartbeats")
        return size

    return send


def _lambda_sender(job: Job, client: Client, closers: list[Callable[[], None]]) -> Sender:
    os.environ["DATABASE_URL"] = job.url  # what lambda_support.runtime reads on the first request
    os.environ.pop("DB_SECRET_ARN", None)
    from makima.lambda_support import runtime

    closers.append(runtime.reset)
    handler = _load_handler()
    context = FakeContext()
    name = "heartbeats_send" if job.mode == "single" else "heartbeats_batch"
    base: dict[str, Any] = json.loads((ROOT / "events" / "http" / f"{name}.json").read_text(encoding="utf-8"))
    rc = base["requestContext"]
    rc["authorizer"] = {"lambda": {"user_id": job.owner_id, "role": Role.DAEMON.value, "token_id": job.token_id}}
    headers = {k: v for k, v in base["headers"].items() if k != "authorization"}  # the authorizer consumed it

    def event(path: str, body: str, i: int) -> dict[str, Any]:
        ev = dict(base)
        ev["rawPath"] = path
        ev["body"] = body
        ev["headers"] = {**headers, "content-length": str(len(body))}
        ev["requestContext"] = {**rc, "http": {**rc["http"], "path": path}, "requestId": f"bench-{i}"}
        return ev

    if job.mode == "single":
        sups = client.supervisors
        templates = [_single_body(s, job.phase, with_contract=False) for s in sups]
        paths = [f"{API}/contracts/{s.contract_id}/supervisor/heartbeat" for s in sups]

        def send_one(i: int) -> int:
            k = i % len(sups)
            ev = event(paths[k], templates[k].replace(TS, _now()), i)
            ev["pathParameters"] = {"contract_id": sups[k].contract_id}
            response = handler(ev, context)
            answer = json.loads(response["body"]) if response["statusCode"] == 200 else None
            if not answer or not answer.get("accepted"):
                raise RuntimeError(f"Lambda heartbeat: {response['statusCode']} {response['body'][:300]}")
            return 1

        return send_one

    bodies = _batch_bodies(job, client)
    batch_path = f"{API}/supervisors/heartbeats"

    def send_batch(i: int) -> int:
        response = handler(event(batch_path, bodies[i % len(bodies)].replace(TS, _now()), i), context)
        answer = json.loads(response["body"]) if response["statusCode"] == 200 else None
        if not answer or answer.get("rejected") != 0:
            raise RuntimeError(f"Lambda batch: {response['statusCode']} {response['body'][:300]}")
        return int(answer["accepted"])

    return send_batch


def _http_sender(job: Job, client: Client, closers: list[Callable[[], None]]) -> Sender:
    import httpx

    http = httpx.Client(
        base_url=job.base_url,
        headers={"Authorization": f"Bearer {job.token}", "Content-Type": "application/json"},
        timeout=30,
    )
    closers.append(http.close)
    if job.mode == "single":
        sups = client.supervisors
        templates = [_single_body(s, job.phase, with_contract=False) for s in sups]
        paths = [f"{API}/contracts/{s.contract_id}/supervisor/heartbeat" for s in sups]

        def send_one(i: int) -> int:
            k = i % len(sups)
            r = http.post(paths[k], content=templates[k].replace(TS, _now()).encode())
            if r.status_code != 200 or not r.json().get("accepted"):
                raise RuntimeError(f"HTTP heartbeat: {r.status_code} {r.text[:300]}")
            return 1

        return send_one

    bodies = _batch_bodies(job, client)

    def send_batch(i: int) -> int:
        r = http.post(f"{API}/supervisors/heartbeats", content=bodies[i % len(bodies)].replace(TS, _now()).encode())
        answer = r.json() if r.status_code == 200 else None
        if not answer or answer.get("rejected") != 0:
            raise RuntimeError(f"HTTP batch: {r.status_code} {r.text[:300]}")
        return int(answer["accepted"])

    return send_batch


SENDERS: dict[str, Callable[[Job, Client, list[Callable[[], None]]], Sender]] = {
    "raw": _raw_sender,
    "raw-tx": _raw_sender,
    "lambda": _lambda_sender,
    "http": _http_sender,
}


def _drive(send: Sender, seconds: float, max_requests: int, out: WorkerResult) -> None:
    """Send requests back to back until the deadline or ``max_requests`` (whichever comes first)."""
    lat = out.latencies_ms
    t_start = time.perf_counter()
    deadline = t_start + seconds
    n = hb = 0
    try:
        while n < max_requests:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            hb += send(n)
            lat.append((time.perf_counter() - t0) * 1000)
            n += 1
    except Exception:
        out.error = traceback.format_exc(limit=8)
    out.requests, out.heartbeats = n, hb
    out.wall_s = time.perf_counter() - t_start


def run_worker(job: Job, ready: Any, go: Any, results: Any, release: Any) -> None:
    """One process: its senders warm up, wait for ``go``, run, report, and wait for ``release`` before
    closing their connections (so the parent can read the server's CPU time while they still exist)."""
    warnings.filterwarnings("ignore")  # Powertools' "No application metrics to publish", once per process
    if job.path == "lambda":
        # The handler prints its EMF metrics (the cold start) to stdout, as CloudWatch expects.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
    closers: list[Callable[[], None]] = []
    try:
        senders = [SENDERS[job.path](job, c, closers) for c in job.clients]
        for send in senders:
            for i in range(job.warmup):
                send(i)
    except Exception:
        ready.put(traceback.format_exc(limit=12))
        return
    ready.put(None)
    go.wait()
    cpu0 = time.process_time()
    outs = [WorkerResult() for _ in senders]
    if len(senders) == 1:
        # In the main thread: Mangum runs its event loop there, as the Lambda runtime does.
        _drive(senders[0], job.seconds, job.max_requests, outs[0])
    else:
        threads = [
            threading.Thread(target=_drive, args=(send, job.seconds, job.max_requests, out), daemon=True)
            for send, out in zip(senders, outs, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    merged = WorkerResult(cpu_s=time.process_time() - cpu0)
    for out in outs:
        merged.latencies_ms += out.latencies_ms
        merged.requests += out.requests
        merged.heartbeats += out.heartbeats
        merged.wall_s = max(merged.wall_s, out.wall_s)
        merged.error = merged.error or out.error
    results.put(merged)
    release.wait(60)
    for close in reversed(closers):
        with contextlib.suppress(Exception):
            close()


# --------------------------------------------------------------------------------------------------
# The local stack


@dataclass
class LocalStack:
    process: subprocess.Popen[str]
    base_url: str
    log: Path

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_stack(database_url: str, workdir: Path) -> LocalStack:
    """``makima dev`` on ``database_url``, started as a user starts it (tests/e2e/conftest.py)."""
    port = _free_port()
    log = workdir / f"stack-{port}.log"
    env = {**os.environ, "DATABASE_URL": database_url}
    args = [sys.executable, "-m", "makima.cli.main", "dev", "--port", str(port), "--data-dir", str(workdir / "unused")]
    out = log.open("w")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"makima dev exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}{API}/health", timeout=1).status_code == 200:
                return LocalStack(proc, base, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"makima dev did not become healthy:\n{log.read_text()}")


# --------------------------------------------------------------------------------------------------
# Phases


PATH_NAMES = {
    "raw": "raw SQL, autocommit",
    "raw-tx": "raw SQL, BEGIN/ingest/COMMIT",
    "lambda": "Lambda handler",
    "http": "local stack over HTTP",
}


@dataclass
class Phase:
    path: str
    mode: str
    processes: int
    threads: int  # senders per process
    requests: int = 0
    heartbeats: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    sender_cpu_s: float = 0.0  # the sending processes (for Lambda: the handlers themselves)
    stack_cpu_s: float | None = None
    postgres_cpu_s: float | None = None
    system_busy: float = 0.0  # cores busy during the window (all processes on the machine)
    stats: ServerStats | None = None
    wire: WireCounts | None = None
    wire_requests: int = 0
    wire_heartbeats: int = 0

    @property
    def name(self) -> str:
        return PATH_NAMES[self.path]

    @property
    def rate(self) -> float:
        return self.heartbeats / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_heartbeat(self) -> float | None:
        """CPU of the senders, the stack and PostgreSQL per heartbeat (None without PostgreSQL's)."""
        if self.postgres_cpu_s is None or not self.heartbeats:
            return None
        return (self.sender_cpu_s + (self.stack_cpu_s or 0.0) + self.postgres_cpu_s) * 1000 / self.heartbeats

    @property
    def bench_cores(self) -> float | None:
        cpu = self.cpu_ms_per_heartbeat
        return cpu * self.heartbeats / 1000 / self.wall_s if cpu is not None and self.wall_s else None

    @property
    def other_cores(self) -> float | None:
        """Cores that something else on the machine kept busy during the window."""
        ours = self.bench_cores
        return max(0.0, self.system_busy - ours) if ours is not None else None

    @property
    def ceiling(self) -> float | None:
        """Heartbeats/s if the senders, the stack and PostgreSQL had every core to themselves and kept them
        busy at this CPU cost per heartbeat: a projection, robust to other load on the machine."""
        cpu = self.cpu_ms_per_heartbeat
        return (os.cpu_count() or 1) * 1000 / cpu if cpu else None


@dataclass
class Setup:
    world: World
    url: str
    batch: int
    seconds: float
    warmup: int
    postmaster: int | None
    workdir: Path


def _clients(world: World, n: int) -> list[Client]:
    """``n`` senders, each with its own daemon and every n-th supervisor."""
    return [Client(world.daemons[k], tuple(world.supervisors[k::n])) for k in range(n)]


def run_workers(
    setup: Setup,
    path: str,
    mode: str,
    *,
    processes: int,
    threads: int,
    url: str,
    base_url: str = "",
    seconds: float,
    max_requests: int,
    warmup: int,
    on_window: Callable[[], Any] | None = None,
) -> tuple[list[WorkerResult], float, Any, Any]:
    """Start the processes, wait until all are warm, run the window. Returns the results, the wall
    time, and whatever ``on_window`` returned at the start and at the end of the window (read while
    the senders' connections are still open)."""
    ctx = mp.get_context("spawn")  # each process a fresh interpreter: a cold container, as Lambda starts one
    ready, results = ctx.Queue(), ctx.Queue()
    go, release = ctx.Event(), ctx.Event()
    clients = _clients(setup.world, processes * threads)
    w = setup.world
    procs = []
    for p in range(processes):
        job = Job(
            path=path,
            mode=mode,
            url=url,
            base_url=base_url,
            clients=tuple(clients[p * threads : (p + 1) * threads]),
            batch=setup.batch,
            seconds=seconds,
            max_requests=max_requests,
            warmup=warmup,
            owner_id=w.owner_id,
            token_id=w.token_id,
            token=w.token,
            phase=w.phase,
        )
        proc = ctx.Process(target=run_worker, args=(job, ready, go, results, release), daemon=True)
        proc.start()
        procs.append(proc)
    try:
        for _ in procs:
            problem = ready.get(timeout=180)
            if problem:
                raise RuntimeError(f"a {path} sender failed to start:\n{problem}")
        at_start = on_window() if on_window else None
        t0 = time.perf_counter()
        go.set()
        outs: list[WorkerResult] = [results.get(timeout=seconds + 180) for _ in procs]
        wall = time.perf_counter() - t0
        at_end = on_window() if on_window else None
        release.set()
        for proc in procs:
            proc.join(timeout=60)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
    errors = [o.error for o in outs if o.error]
    if errors:
        raise RuntimeError(f"{path} {mode}: a sender failed:\n{errors[0]}")
    return outs, wall, at_start, at_end


def timed_phase(setup: Setup, path: str, mode: str, processes: int, threads: int, stack: LocalStack | None) -> Phase:
    phase = Phase(path, mode, processes, threads)
    url = setup.url

    def window() -> tuple[float | None, float | None, tuple[float, float]]:
        stack_cpu = _proc_cpu(stack.process.pid) if stack else None
        return stack_cpu, _postgres_cpu(setup.postmaster), _system_cpu()

    before_stats = server_stats(url)
    outs, wall, start, end = run_workers(
        setup,
        path,
        mode,
        processes=processes,
        threads=threads,
        url=url,
        base_url=stack.base_url if stack else "",
        seconds=setup.seconds,
        max_requests=int(setup.seconds * 200_000) + 1,
        warmup=setup.warmup,
        on_window=window,
    )
    phase.wall_s = max(o.wall_s for o in outs) or wall
    for o in outs:
        phase.requests += o.requests
        phase.heartbeats += o.heartbeats
        phase.latencies_ms += o.latencies_ms
        phase.sender_cpu_s += o.cpu_s
    if start[0] is not None and end[0] is not None:
        phase.stack_cpu_s = end[0] - start[0]
    if start[1] is not None and end[1] is not None:
        phase.postgres_cpu_s = end[1] - start[1]
    busy, total = end[2][0] - start[2][0], end[2][1] - start[2][1]
    phase.system_busy = (os.cpu_count() or 1) * busy / total if total else 0.0
    if stack is not None:
        stack.stop()  # its pooled connections flush their statistics when they close
    wait_for_disconnects(url)
    phase.stats = server_stats(url) - before_stats
    return phase


def counting_pass(
    setup: Setup, path: str, mode: str, counter: WireCounter, stack: LocalStack | None
) -> tuple[WireCounts, int, int]:
    """A short run of one sender through the counting proxy: the counts of its requests after warm-up,
    the number of requests and of heartbeats they carried."""
    requests = COUNT_REQUESTS if mode == "single" else max(5, COUNT_REQUESTS // setup.batch)
    outs, _, before, after = run_workers(
        setup,
        path,
        mode,
        processes=1,
        threads=1,
        url=counter.url,
        base_url=stack.base_url if stack else "",
        seconds=120,
        max_requests=requests,
        warmup=setup.warmup,
        on_window=counter.snapshot,
    )
    counts: WireCounts = after - before
    return counts, sum(o.requests for o in outs), sum(o.heartbeats for o in outs)


# --------------------------------------------------------------------------------------------------
# Reporting


def machine_facts(url: str, where: str, world: World, args: argparse.Namespace) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        version = conn.execute("SELECT version()").fetchone()
        settings = conn.execute(
            """
            SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ' ' ORDER BY name)
              FROM pg_settings
             WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'wal_level', 'max_connections', 'jit')
            """
        ).fetchone()
        size = conn.execute(
            """
            SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = 'supervisor_heartbeats'
            """
        ).fetchone()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores (nproc)": str(os.cpu_count()),
        "python / psycopg": f"{platform.python_version()} / {psycopg.__version__}",
        "postgresql": version[0] if version else "?",
        "server": where,
        "settings": settings[0] if settings else "?",
        "supervisors": (
            f"{len(world.supervisors):,} (one per contract; each sender owns its own daemon and every n-th supervisor)"
        ),
        "setup": (
            f"template contract + supervisor through the services {world.service_s:.1f} s, SQL clones and "
            f"partitions {world.clone_s:.1f} s, first heartbeat of each + VACUUM (ANALYZE) {world.prime_s:.1f} s"
        ),
        "senders": (
            f"{args.workers} processes (raw: one connection each; Lambda: one handler container each); local stack: "
            f"{args.workers} client processes x {args.http_threads} threads (httpx) against the one server process"
        ),
        "heartbeat history after the run": size[0] if size and size[0] else "?",
    }


def raw_rate(phases: Sequence[Phase], mode: str) -> float | None:
    for p in phases:
        if p.path == "raw" and p.mode == mode:
            return p.rate
    return None


def _num(value: float | None, fmt: str, width: int) -> str:
    return format(value, fmt) if value is not None else f"{'-':>{width}}"


def print_throughput(phases: Sequence[Phase]) -> None:
    head = (
        f"{'path':<31} {'mode':<6} {'heartbeats/s':>12} {'req/s':>7} | {'p50':>6} {'p95':>6} {'p99':>6} ms | "
        f"{'vs raw':>6} | CPU ms/heartbeat: {'senders':>7} {'stack':>6} {'postgres':>8} | cores: {'bench':>5} "
        f"{'other':>5} | {'ceiling':>7}"
    )
    print(head)
    print("-" * len(head))
    for p in phases:
        raw = raw_rate(phases, p.mode)
        n = p.heartbeats
        print(
            f"{p.name:<31} {p.mode:<6} {p.rate:12,.0f} {p.requests / p.wall_s:7,.0f} | "
            f"{percentile(p.latencies_ms, 0.5):6.2f} {percentile(p.latencies_ms, 0.95):6.2f} "
            f"{percentile(p.latencies_ms, 0.99):6.2f} ms | {_num(p.rate / raw if raw else None, '6.2f', 6)} | "
            f"{'':>17} {_num(p.sender_cpu_s * 1000 / n, '7.3f', 7)} "
            f"{_num(p.stack_cpu_s * 1000 / n if p.stack_cpu_s is not None else None, '6.3f', 6)} "
            f"{_num(p.postgres_cpu_s * 1000 / n if p.postgres_cpu_s is not None else None, '8.3f', 8)} | "
            f"{'':>6} {_num(p.bench_cores, '5.2f', 5)} {_num(p.other_cores, '5.2f', 5)} | "
            f"{_num(p.ceiling, '7,.0f', 7)}"
        )


def print_server_stats(phases: Sequence[Phase]) -> None:
    head = (
        f"{'path':<31} {'mode':<6} | {'heartbeats':>10} | {'commits':>7} {'rows in':>7} | {'contracts upd':>13} "
        f"{'HOT':>5} | {'sup_states upd':>14} {'HOT':>5} | {'WAL bytes':>9} {'FPI':>6} | "
        f"{'events':>6}"
    )
    print(head)
    print("-" * len(head))
    for p in phases:
        s = p.stats
        # The statistics span the warm-up too (the senders' backends flush them when they disconnect),
        # so they are divided by the heartbeats the server stored over the same span.
        n = s.heartbeat_rows if s is not None else 0
        if s is None or not n:
            continue

        def hot(upd: int, hot_upd: int) -> str:
            return f"{hot_upd / upd * 100:4.0f}%" if upd else f"{'-':>5}"

        print(
            f"{p.name:<31} {p.mode:<6} | {n:10,} | {s.xact_commit / n:7.3f} {s.tup_inserted / n:7.3f} | "
            f"{s.contracts_upd / n:13.3f} {hot(s.contracts_upd, s.contracts_hot)} | "
            f"{s.states_upd / n:14.3f} {hot(s.states_upd, s.states_hot)} | {s.wal_bytes / n:9,.0f} "
            f"{s.wal_fpi / n:6.3f} | {s.events:6,}"
        )


def print_wire(phases: Sequence[Phase]) -> None:
    for p in phases:
        if p.wire is None or not p.wire_requests:
            continue
        w, r, n = p.wire, p.wire_requests, p.wire_heartbeats
        print(
            f"  {p.name}, {p.mode} ({r} requests, {n} heartbeats): per request {w.round_trips / r:.2f} round trips, "
            f"{w.total / r:.2f} statements; per heartbeat {w.round_trips / n:.3f} round trips, "
            f"{w.total / n:.3f} statements; Parse messages {w.parses}"
        )
        for label, count in w.statements.most_common():
            print(f"      {count / r:6.2f} per request  {label}")


def verdicts(phases: Sequence[Phase]) -> list[str]:
    lines = []
    for p in phases:
        if p.path not in ("lambda", "http"):
            continue
        target = TARGET_SINGLE if p.mode == "single" else TARGET_BATCH
        met = "met" if p.rate >= target else "MISSED"
        lines.append(f"{p.name}, {p.mode}: {p.rate:,.0f} heartbeats/s against {target:,}/s: {met}")
    return lines


# --------------------------------------------------------------------------------------------------


PLAN: tuple[tuple[str, str], ...] = (
    ("raw", "single"),
    ("raw-tx", "single"),
    ("raw", "batch"),
    ("lambda", "single"),
    ("lambda", "batch"),
    ("http", "single"),
    ("http", "batch"),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_heartbeats", description=__doc__.split("\n")[0])
    parser.add_argument("--supervisors", type=int, default=1000, help="supervised contracts (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed run (default 10)")
    parser.add_argument("--batch", type=int, default=100, help="heartbeats per batched request (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="sending processes per run (default 2)")
    parser.add_argument(
        "--http-threads", type=int, default=4, help="threads (connections) per client process for the stack (default 4)"
    )
    parser.add_argument(
        "--paths",
        default="raw,lambda,http",
        help="which paths to run, comma-separated, of raw, lambda, http (default all three)",
    )
    parser.add_argument("--no-count", action="store_true", help="skip the statement / round-trip counting passes")
    args = parser.parse_args(argv)
    paths = {p.strip() for p in args.paths.split(",") if p.strip()}
    if not paths <= {"raw", "lambda", "http"}:
        parser.error("--paths takes raw, lambda and http")
    if min(args.supervisors, args.batch, args.workers, args.http_threads) < 1 or args.seconds <= 0:
        parser.error("--supervisors, --seconds, --batch, --workers and --http-threads must be positive")
    if args.batch > 500:
        parser.error("--batch is at most 500 (the API's limit)")
    for key, value in ENV.items():
        os.environ.setdefault(key, value)

    started = time.perf_counter()
    load_before = os.getloadavg()
    phases: list[Phase] = []
    with bench_database() as (url, where), tempfile.TemporaryDirectory(prefix="makima-bench-hb-") as tmp:
        t0 = time.perf_counter()
        applied = migrate(url)
        print(f"database ready ({where}), {len(applied)} migrations in {time.perf_counter() - t0:.1f} s", flush=True)
        senders = max(args.workers, args.workers * args.http_threads if "http" in paths else 1)
        world = build_world(url, args.supervisors, senders)
        print(
            f"{len(world.supervisors):,} supervisors ready (services {world.service_s:.1f} s, clones "
            f"{world.clone_s:.1f} s, first heartbeats {world.prime_s:.1f} s)",
            flush=True,
        )
        setup = Setup(world, url, args.batch, args.seconds, WARMUP_REQUESTS, find_postmaster(url), Path(tmp))
        for path, mode in PLAN:
            if path.split("-")[0] not in paths:
                continue
            http = path == "http"
            print(f"measuring {PATH_NAMES[path]}, {mode} ...", flush=True)
            stack = start_stack(url, setup.workdir) if http else None
            try:
                phase = timed_phase(setup, path, mode, args.workers, args.http_threads if http else 1, stack)
            finally:
                if stack is not None:
                    stack.stop()
            phases.append(phase)
            print(
                f"  {phase.rate:,.0f} heartbeats/s, {phase.requests / phase.wall_s:,.0f} requests/s, "
                f"p50 {percentile(phase.latencies_ms, 0.5):.2f} ms",
                flush=True,
            )
        if not args.no_count:
            counter = WireCounter(url)
            try:
                for phase in phases:
                    print(f"counting statements: {phase.name}, {phase.mode} ...", flush=True)
                    stack = start_stack(counter.url, setup.workdir) if phase.path == "http" else None
                    try:
                        phase.wire, phase.wire_requests, phase.wire_heartbeats = counting_pass(
                            setup, phase.path, phase.mode, counter, stack
                        )
                    finally:
                        if stack is not None:
                            stack.stop()
            finally:
                counter.close()
        facts = machine_facts(url, where, world, args)

    load_after = os.getloadavg()
    print()
    print("Machine and data")
    for k, v in facts.items():
        print(f"  {k:<32} {v}")
    print(
        f"  {'load average (1 min)':<32} {load_before[0]:.2f} at start, {load_after[0]:.2f} at end "
        "(anything else running on these cores shows in the figures)"
    )
    print()
    print(
        f"Throughput over {args.seconds:g} s per run, after {WARMUP_REQUESTS} warm-up requests per sender; batch = "
        f"{args.batch} heartbeats per request; latency per request, in ms; vs raw = this rate / raw SQL autocommit "
        "in the same mode. CPU from /proc: senders = the sending processes (for the Lambda path, the handlers "
        "themselves), stack = the makima dev process, postgres = all server processes; cores = what the bench "
        "kept busy and what anything else on the machine did during the window; ceiling = heartbeats/s at this "
        "CPU cost per heartbeat with every core busy and nothing else running (a projection)."
    )
    print_throughput(phases)
    busy_elsewhere = [p for p in phases if (p.other_cores or 0.0) > 0.2]
    if busy_elsewhere:
        worst = max(p.other_cores or 0.0 for p in busy_elsewhere)
        print(
            f"WARNING: something else used up to {worst:.2f} cores during {len(busy_elsewhere)} of the runs: "
            "their rates and latencies are lower than this machine gives when it is quiet."
        )
    print()
    print(
        "Per heartbeat stored, from the server's statistics of each timed run and its warm-up (pg_stat_database, "
        "pg_stat_user_tables, pg_stat_wal; HOT = updates that wrote no index entry; FPI = full-page images "
        "written to the WAL)"
    )
    print_server_stats(phases)
    print()
    if any(p.wire is not None for p in phases):
        print(
            "On the wire (a separate pass per path: one sender through a counting protocol proxy, after warm-up; "
            "a round trip = a Sync or a simple Query)"
        )
        print_wire(phases)
        print()
    lines = verdicts(phases)
    if lines:
        print(f"The bar ({TARGET_SINGLE:,}/s one per request, {TARGET_BATCH:,}/s batched, on this machine):")
        for line in lines:
            print(f"  {line}")
    print(f"total runtime {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
