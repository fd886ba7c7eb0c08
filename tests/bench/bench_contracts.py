"""Contracts at scale: bulk-load N contracts, then time the list/get/phase-change paths and EXPLAIN them.

Run it (it is a script, not a pytest test):

    .venv/bin/python -m tests.bench.bench_contracts [--contracts 100000] [--owners 100] [--requests 300]

It starts its own fresh database (a new ``makima_bench_<random>`` database on the DATABASE_URL server,
dropped at the end; without DATABASE_URL an embedded PostgreSQL in a temporary directory), migrates it,
COPYs the data in, and measures each operation twice: through the service functions over a
``PooledDatabase``, and through the HTTP app in-process (``TestClient``, real bearer tokens), so the
second set includes FastAPI, authentication and serialisation. Each list query the data layer runs is
captured (exact SQL and parameters) and EXPLAINed, as a one-off (custom) plan and as the generic plan a
prepared statement may switch to.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from makima.api.app import create_app
from makima.db.connection import Conn, PooledDatabase, transaction
from makima.db.embedded import start_embedded
from makima.db.migrate import migrate
from makima.domain.contract_lists import ContractSort
from makima.domain.durations import parse_duration
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus
from makima.services import auth
from makima.services import contracts as svc

API = "/api/v1"
PAGE = 50
PAGE_DEPTH = 20  # the "20th page" measurement
STALE = timedelta(minutes=30)  # what "stale" means in the data summary
SLOW_P95_MS = 50.0
WHOLE_SCOPE_MIN = 5_000  # flag a plan that reads its whole scope only when the scope is at least this big

# Realistic mix: most contracts are finished, a quarter can still do work.
STATUS_MIX: tuple[tuple[str, int], ...] = (
    ("completed", 45),
    ("archived", 25),
    ("failed", 4),
    ("active", 10),
    ("waiting_for_input", 5),
    ("paused", 4),
    ("blocked", 3),
    ("created", 4),
)
TERMINAL = frozenset({"completed", "failed", "archived"})
PHASES: dict[str, tuple[str, ...]] = {
    "simple": ("plan", "execute"),
    "specification": ("research", "specify", "plan", "execute", "review"),
}
STALE_SHARE = 0.05  # of the non-terminal contracts
HEAVY_OWNER_SHARE = 0.10  # owner 0 holds this share of all contracts; the rest are spread evenly

# The filters the list measurements use.
OWNER_STATUS = ContractStatus.ACTIVE
ADMIN_STATUS = ContractStatus.WAITING_FOR_INPUT
PHASE_FILTER = "research"


# --------------------------------------------------------------------------------------------------
# The database


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextmanager
def bench_database() -> Iterator[tuple[str, str]]:
    """A new empty database: (url, where it runs). Dropped (and an embedded server stopped) at exit."""
    with ExitStack() as stack:
        external = os.environ.get("DATABASE_URL")
        if external:
            server_url, where = external, "DATABASE_URL server"
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="makima-bench-"))
            pg = start_embedded(Path(tmp) / "data", keep_data=False)
            stack.callback(pg.stop)
            server_url, where = pg.url, "embedded PostgreSQL (pgserver)"
        name = f"makima_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield _with_dbname(server_url, name), where
        finally:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------------------------------
# Bulk load


@dataclass
class Loaded:
    owners: list[uuid.UUID]
    heavy_owner: uuid.UUID
    heavy_owner_contracts: int
    contracts: int
    events: int
    generate_s: float  # building the rows in Python
    copy_s: float  # COPY of users, contracts and events, with every index in place, and COMMIT
    analyze_s: float
    status_counts: dict[str, int]
    stale: int


_CONTRACT_COLUMNS = (
    "id",
    "owner_id",
    "name",
    "description",
    "contract_type",
    "phase",
    "status",
    "version",
    "phase_guard",
    "status_changed_at",
    "last_activity_at",
    "waiting_for",
    "blocked_reason",
    "failure_reason",
    "auto_complete_enabled",
    "completion_detected_at",
    "created_at",
    "updated_at",
)
_EVENT_COLUMNS = ("contract_id", "owner_id", "type", "payload", "actor", "created_at", "published_at")


def _copy_sql(table: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


def _contract_row(i: int, owner: uuid.UUID, now: datetime, rng: random.Random) -> tuple[Any, ...]:
    statuses = [s for s, _ in STATUS_MIX]
    weights = [w for _, w in STATUS_MIX]
    status = rng.choices(statuses, weights)[0]
    ctype = "simple" if rng.random() < 0.4 else "specification"
    phases = PHASES[ctype]
    if status in ("completed", "archived"):
        phase = phases[-1]
    elif status == "created":
        phase = phases[0]
    else:
        phase = rng.choice(phases)
    created = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
    age = (now - created).total_seconds()
    if status in TERMINAL:
        last = created + timedelta(seconds=rng.uniform(0, min(age, 3 * 86400)))
    elif rng.random() < STALE_SHARE and age > 31 * 60:
        last = now - timedelta(seconds=rng.uniform(31 * 60, max(31 * 60, min(age, 7 * 86400))))
    else:
        last = now - timedelta(seconds=rng.uniform(0, min(age, 25 * 60)))
    changed = created + (last - created) * rng.random()
    return (
        uuid.uuid4(),
        owner,
        f"bench contract {i}",
        "",
        ctype,
        phase,
        status,
        1 + rng.randrange(20),
        rng.random() < 0.2,
        changed,
        last,
        "answer to a question" if status == "waiting_for_input" else None,
        "waiting on a dependency" if status == "blocked" else None,
        "supervisor crashed" if status == "failed" else None,
        True,
        last if status in ("completed", "archived") else None,
        created,
        last,
    )


def load(url: str, n_contracts: int, n_owners: int, seed: int, extra_indexes: Sequence[str] = ()) -> Loaded:
    """Generate the rows, COPY them in (indexes in place, as in production), then VACUUM (ANALYZE).

    VACUUM as well as ANALYZE: the planner needs the statistics, and on 2 cores an autovacuum of the
    fresh 100,000 rows starting in the middle of the timings would only add noise.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC)
    owners = [uuid.uuid4() for _ in range(n_owners)]
    status_counts: dict[str, int] = {}
    stale = 0
    heavy = 0
    t0 = time.perf_counter()
    contract_rows: list[tuple[Any, ...]] = []
    event_rows: list[tuple[Any, ...]] = []
    for i in range(n_contracts):
        if n_owners == 1 or rng.random() < HEAVY_OWNER_SHARE:
            owner = owners[0]
        else:
            owner = owners[1 + rng.randrange(n_owners - 1)]
        row = _contract_row(i, owner, now, rng)
        contract_rows.append(row)
        cid, name, ctype, phase, status, created = row[0], row[2], row[4], row[5], row[6], row[16]
        payload = {"contract_id": str(cid), "name": name, "contract_type": ctype, "phase": phase}
        event_rows.append((cid, owner, "contract_created", json.dumps(payload), f"user:{owner}", created, created))
        status_counts[status] = status_counts.get(status, 0) + 1
        heavy += owner == owners[0]
        if status not in TERMINAL and row[10] < now - STALE:
            stale += 1
    t1 = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy(_copy_sql("users", ("id", "name", "role"))) as copy:
                for k, owner in enumerate(owners):
                    copy.write_row((owner, f"bench-owner-{k:05d}", "user"))
            with cur.copy(_copy_sql("contracts", _CONTRACT_COLUMNS)) as copy:
                for row in contract_rows:
                    copy.write_row(row)
            with cur.copy(_copy_sql("contract_events", _EVENT_COLUMNS)) as copy:
                for row in event_rows:
                    copy.write_row(row)
        conn.commit()
    t2 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in extra_indexes:
            conn.execute(statement)  # a candidate index to try (--try-index), never a migration
        conn.execute("VACUUM (ANALYZE)")
    t3 = time.perf_counter()
    return Loaded(
        owners=owners,
        heavy_owner=owners[0],
        heavy_owner_contracts=heavy,
        contracts=n_contracts,
        events=n_contracts,
        generate_s=t1 - t0,
        copy_s=t2 - t1,
        analyze_s=t3 - t2,
        status_counts=status_counts,
        stale=stale,
    )


# --------------------------------------------------------------------------------------------------
# Capturing the exact SQL the data layer sends


class _RecordingConn:
    """Delegates to a real connection and remembers every statement executed on it."""

    def __init__(self, conn: Conn, calls: list[tuple[str, Any]]) -> None:
        self._conn = conn
        self._calls = calls

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self._calls.append((str(query), params))
        return self._conn.execute(query, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class RecordingDatabase:
    """A ``Database`` whose connections record their statements (to EXPLAIN what really runs)."""

    def __init__(self, db: PooledDatabase) -> None:
        self._db = db
        self.calls: list[tuple[str, Any]] = []

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._db.connection() as conn:
            yield _RecordingConn(conn, self.calls)

    def close(self) -> None:
        pass

    def list_statement(self) -> tuple[str, Any]:
        for query, params in reversed(self.calls):
            if "FROM contracts" in query and "ORDER BY" in query:
                return query, params
        raise RuntimeError("no list statement was recorded")


# --------------------------------------------------------------------------------------------------
# EXPLAIN


@dataclass
class PlanSummary:
    kind: str  # "index", "bitmap", "seq"
    detail: str  # node types and index names on contracts
    examined: int  # rows the contracts scan produced plus rows it removed by filter
    ms: float
    plan: dict[str, Any]


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def summarise(explained: Any) -> PlanSummary:
    doc = explained[0] if isinstance(explained, list) else explained
    root: dict[str, Any] = doc["Plan"]
    scans: list[str] = []
    examined = 0
    kinds: set[str] = set()
    for node in _nodes(root):
        ntype = node["Node Type"]
        if node.get("Relation Name") == "contracts":
            loops = int(node.get("Actual Loops", 1) or 1)
            examined += (int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))) * loops
            if ntype == "Seq Scan":
                kinds.add("seq")
                scans.append("Seq Scan")
            elif ntype == "Bitmap Heap Scan":
                kinds.add("bitmap")
                idx = [c.get("Index Name", "?") for c in _nodes(node) if c["Node Type"] == "Bitmap Index Scan"]
                scans.append(f"Bitmap Heap Scan ({'+'.join(idx)})")
            else:
                kinds.add("index")
                direction = " Backward" if node.get("Scan Direction") == "Backward" else ""
                scans.append(f"{ntype}{direction} ({node.get('Index Name', '?')})")
    kind = "seq" if "seq" in kinds else ("bitmap" if "bitmap" in kinds else ("index" if kinds else "none"))
    return PlanSummary(kind, ", ".join(scans), examined, float(doc.get("Execution Time", 0.0)), doc)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")


def _numbered(query: str, params: Any) -> tuple[str, list[Any]]:
    """psycopg placeholders -> $n, and the values in $n order (for PREPARE / EXECUTE)."""
    order: list[Any] = []
    names: dict[str, int] = {}
    positional = iter(params) if isinstance(params, Sequence) and not isinstance(params, str) else iter(())

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        name = m.group(1)
        if name is not None:
            assert isinstance(params, Mapping)
            if name not in names:
                order.append(params[name])
                names[name] = len(order)
            return f"${names[name]}"
        order.append(next(positional))
        return f"${len(order)}"

    return _PLACEHOLDER.sub(sub, query), order


def explain_custom(conn: psycopg.Connection[Any], query: str, params: Any, fmt: str = "JSON") -> Any:
    """The plan a one-off execution gets: parameters are known when planning."""
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS OFF, FORMAT {fmt}) " + query, params, prepare=False).fetchall()
    return row[0][0] if fmt == "JSON" else "\n".join(r[0] for r in row)


def explain_generic(conn: psycopg.Connection[Any], query: str, params: Any, fmt: str = "JSON") -> Any:
    """The generic plan: what a prepared statement runs once PostgreSQL's plan cache switches to it."""
    numbered, values = _numbered(query, params)
    # prepare=False throughout: psycopg must not prepare these statements itself behind our back.
    conn.execute(sql.SQL("PREPARE bench_list AS {}").format(sql.SQL(numbered)), prepare=False)
    conn.execute("SET plan_cache_mode = force_generic_plan", prepare=False)
    try:
        stmt = sql.SQL("EXPLAIN (ANALYZE, BUFFERS OFF, FORMAT {}) EXECUTE bench_list({})").format(
            sql.SQL(fmt),
            sql.SQL(", ").join(sql.Literal(v) for v in values),
        )
        rows = conn.execute(stmt, prepare=False).fetchall()
    finally:
        conn.execute("RESET plan_cache_mode", prepare=False)
        conn.execute("DEALLOCATE bench_list", prepare=False)
    return rows[0][0] if fmt == "JSON" else "\n".join(r[0] for r in rows)


# --------------------------------------------------------------------------------------------------
# Timing


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(fn: Callable[[], Any], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


@dataclass
class Result:
    name: str
    service_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    rows: int | None = None
    scope_rows: int = 0  # contracts the caller can see
    custom: PlanSummary | None = None
    generic: PlanSummary | None = None

    @property
    def reads_whole_scope(self) -> bool:
        """The plan reads (nearly) every contract in scope to fill one page: its cost grows with the table."""
        if self.custom is None or self.scope_rows < WHOLE_SCOPE_MIN:
            return False  # reading a few thousand rows is cheap whatever the plan
        return self.custom.examined >= 0.9 * self.scope_rows


# --------------------------------------------------------------------------------------------------
# The operations


@dataclass
class ListOp:
    name: str
    who: str  # "owner" or "admin"
    statuses: list[ContractStatus] | None = None
    phase: str | None = None
    stale: str | None = None  # a threshold as the API takes it: "30m", "30d"
    deep: bool = False  # fetch page PAGE_DEPTH (cursor from walking the pages before it)
    contract_type: str | None = None
    search: str | None = None  # the name search (q)
    sort: ContractSort = ContractSort.CREATED

    @property
    def stale_threshold(self) -> timedelta | None:
        return parse_duration(self.stale) if self.stale else None

    def query_string(self) -> dict[str, str]:
        q: dict[str, str] = {"limit": str(PAGE)}
        if self.statuses:
            q["status"] = ",".join(s.value for s in self.statuses)
        if self.phase:
            q["phase"] = self.phase
        if self.stale:
            q["stale"] = "true"
            q["threshold"] = self.stale
        if self.contract_type:
            q["contract_type"] = self.contract_type
        if self.search:
            q["q"] = self.search
        if self.sort is not ContractSort.CREATED:
            q["sort"] = self.sort.value
        return q


LIST_OPS: tuple[ListOp, ...] = (
    ListOp("list owner, page 1", "owner"),
    ListOp(f"list owner, status={OWNER_STATUS.value}", "owner", statuses=[OWNER_STATUS]),
    ListOp("list owner, stale>30m", "owner", stale="30m"),
    ListOp(f"list owner, phase={PHASE_FILTER}", "owner", phase=PHASE_FILTER),
    ListOp(f"list owner, page {PAGE_DEPTH} (cursor)", "owner", deep=True),
    ListOp(f"list admin, status={ADMIN_STATUS.value}", "admin", statuses=[ADMIN_STATUS]),
    ListOp("list admin, stale>30m", "admin", stale="30m"),
    # Worst cases: nothing has been idle for 30 days (the generator keeps stale work under 7 days), so
    # an ordered index walk finds no row to stop on and reads every contract in scope.
    ListOp("worst: owner, stale>30d (none)", "owner", stale="30d"),
    ListOp("worst: admin, stale>30d (none)", "admin", stale="30d"),
    # Issue 16: the console's list, sorted by activity, filtered by type, searched by name. Names are
    # "bench contract <i>": "contract 12" matches about one in a hundred; "no such name" matches none, so
    # the owner's search reads every one of the owner's contracts (the cost of a substring ILIKE).
    ListOp("list owner, sort=activity", "owner", sort=ContractSort.ACTIVITY),
    ListOp(f"list owner, sort=activity, page {PAGE_DEPTH}", "owner", deep=True, sort=ContractSort.ACTIVITY),
    ListOp("list owner, type=simple", "owner", contract_type="simple"),
    ListOp("list owner, q=contract 12", "owner", search="contract 12"),
    ListOp("list owner, q=contract 12, activity", "owner", search="contract 12", sort=ContractSort.ACTIVITY),
    ListOp("list admin, sort=activity", "admin", sort=ContractSort.ACTIVITY),
    ListOp("worst: owner, q (none)", "owner", search="no such name"),
    ListOp("worst: admin, q (none)", "admin", search="no such name"),
)


class Bench:
    def __init__(self, url: str, loaded: Loaded, requests: int) -> None:
        self.url = url
        self.loaded = loaded
        self.requests = requests
        self.db = PooledDatabase(url, min_size=1, max_size=4)
        with transaction(self.db) as conn:
            admin_secret = auth.ensure_admin(conn, name="bench-admin", token=f"mkm_bench_{uuid.uuid4().hex}")
            assert admin_secret is not None
            self.admin = auth.resolve_with(conn, admin_secret)
        self.admin_token = admin_secret
        issued = auth.issue_token(self.db, self.admin, loaded.heavy_owner, name="bench", kind="user")
        self.owner_token = issued.secret
        self.owner = auth.resolve(self.db, issued.secret)
        self.app = create_app(self.db)
        with warnings.catch_warnings():
            # Starlette's note that its TestClient will move to httpx2 (pytest's config filters it too).
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient

        self.client = TestClient(self.app)
        # Contracts the phase-change measurement moves back and forth between plan and execute.
        with self.db.connection() as conn:
            rows = conn.execute(
                """
                SELECT id, phase, version FROM contracts
                 WHERE owner_id = %s AND status = 'active' ORDER BY created_at DESC LIMIT 50
                """,
                (loaded.heavy_owner,),
            ).fetchall()
        self.movable: list[dict[str, Any]] = [dict(r) for r in rows]
        self.statements: dict[str, tuple[str, Any]] = {}
        self._next_movable = 0
        with self.db.connection() as conn:
            recent = conn.execute(
                "SELECT id FROM contracts WHERE owner_id = %s ORDER BY created_at DESC LIMIT 11",
                (loaded.heavy_owner,),
            ).fetchall()
        if not recent:
            raise SystemExit("the measured owner has no contracts: load more (--contracts) or fewer owners")
        self.sample_id: uuid.UUID = recent[-1]["id"]

    def close(self) -> None:
        self.client.close()
        self.db.close()

    def scope_rows(self, who: str) -> int:
        return self.loaded.contracts if who == "admin" else self.loaded.heavy_owner_contracts

    def principal(self, who: str) -> Principal:
        return self.admin if who == "admin" else self.owner

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token if who == 'admin' else self.owner_token}"}

    # --- lists ---

    def service_list(self, op: ListOp, db: Any = None, cursor: str | None = None) -> svc.ContractPage:
        return svc.list_contracts(
            db or self.db,
            self.principal(op.who),
            statuses=op.statuses,
            phase=op.phase,
            stale_threshold=op.stale_threshold,
            contract_type=op.contract_type,
            search=op.search,
            sort=op.sort,
            cursor=cursor,
            limit=PAGE,
        )

    def deep_cursor(self, op: ListOp) -> tuple[str | None, int]:
        """Walk pages 1..PAGE_DEPTH-1: (the cursor of page PAGE_DEPTH, PAGE_DEPTH), or of the last page
        and its number when the list is shorter (None for page 1)."""
        cursor: str | None = None
        pages = 1
        for _ in range(PAGE_DEPTH - 1):
            page = self.service_list(op, cursor=cursor)
            if page.next_cursor is None:
                return cursor, pages
            cursor = page.next_cursor
            pages += 1
        return cursor, pages

    def run_list(self, op: ListOp) -> Result:
        result = Result(op.name, scope_rows=self.scope_rows(op.who))
        cursor: str | None = None
        if op.deep:
            t0 = time.perf_counter()
            cursor, pages = self.deep_cursor(op)
            walk_ms = (time.perf_counter() - t0) * 1000
            if pages != PAGE_DEPTH:
                result.name = f"list owner, page {pages} (cursor, last)"
            print(f"  walked {pages - 1} pages to reach page {pages} in {walk_ms:.0f} ms", flush=True)
        result.rows = len(self.service_list(op, cursor=cursor).contracts)
        result.service_ms = timed(lambda: self.service_list(op, cursor=cursor), self.requests)
        params = op.query_string()
        if cursor:
            params["cursor"] = cursor
        headers = self.headers(op.who)

        def http() -> None:
            r = self.client.get(f"{API}/contracts", params=params, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{op.name}: HTTP {r.status_code} {r.text[:300]}")

        result.http_ms = timed(http, self.requests)
        # The exact statement the data layer ran, EXPLAINed both ways.
        recorder = RecordingDatabase(self.db)
        self.service_list(op, db=recorder, cursor=cursor)
        query, qparams = recorder.list_statement()
        with psycopg.connect(self.url, autocommit=True) as conn:
            result.custom = summarise(explain_custom(conn, query, qparams))
            result.generic = summarise(explain_generic(conn, query, qparams))
        self.statements[op.name] = (query, qparams)
        return result

    # --- get and phase change ---

    def run_get(self) -> Result:
        result = Result("get contract", rows=1)
        cid = self.sample_id
        result.service_ms = timed(lambda: svc.get_contract(self.db, self.owner, cid), self.requests)
        headers = self.headers("owner")

        def http() -> None:
            r = self.client.get(f"{API}/contracts/{cid}", headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"get: HTTP {r.status_code} {r.text[:300]}")

        result.http_ms = timed(http, self.requests)
        return result

    def _next(self) -> tuple[dict[str, Any], str]:
        state = self.movable[self._next_movable % len(self.movable)]
        self._next_movable += 1
        return state, ("plan" if state["phase"] == "execute" else "execute")

    def run_phase_change(self) -> Result:
        """Back and forth between plan and execute: a person's forced move (going back, or past a gate the
        generated contracts never met, is refused without ``force``), recorded like any phase change."""
        result = Result("phase change", rows=1)
        if not self.movable:
            print("  no active contract to move: phase change skipped", flush=True)
            return result

        def service() -> None:
            state, target = self._next()
            moved = svc.change_phase(
                self.db,
                self.owner,
                state["id"],
                phase=target,
                expected_version=state["version"],
                confirmed=True,
                force=True,
            )
            state["phase"], state["version"] = moved.phase, moved.version

        def http() -> None:
            state, target = self._next()
            r = self.client.post(
                f"{API}/contracts/{state['id']}/phase",
                json={"phase": target, "expected_version": state["version"], "confirmed": True, "force": True},
                headers=self.headers("owner"),
            )
            if r.status_code != 200:
                raise RuntimeError(f"phase change: HTTP {r.status_code} {r.text[:300]}")
            body = r.json()
            state["phase"], state["version"] = body["phase"], body["version"]

        result.service_ms = timed(service, self.requests)
        result.http_ms = timed(http, self.requests)
        return result

    def prepared_statements(self) -> list[dict[str, Any]]:
        """How the pool's connection actually planned the list statement (custom vs generic plans)."""
        with self.db.connection() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    """
                    SELECT name, generic_plans, custom_plans, statement FROM pg_prepared_statements
                     WHERE statement LIKE '%%FROM contracts%%' AND statement LIKE '%%ORDER BY%%'
                    """
                ).fetchall()
            ]


# --------------------------------------------------------------------------------------------------
# Reporting


def machine_facts(url: str, loaded: Loaded, where: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        version = conn.execute("SELECT version()").fetchone()
        settings = conn.execute(
            """
            SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ' ' ORDER BY name)
              FROM pg_settings WHERE name IN ('shared_buffers', 'work_mem', 'jit', 'random_page_cost')
            """
        ).fetchone()
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('contracts'))").fetchone()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores (nproc)": str(os.cpu_count()),
        "python / psycopg": f"{platform.python_version()} / {psycopg.__version__}",
        "postgresql": version[0] if version else "?",
        "server": where,
        "settings": settings[0] if settings else "?",
        "contracts": f"{loaded.contracts:,} ({size[0] if size else '?'} with indexes)",
        "owners": f"{len(loaded.owners)} (the measured owner has {loaded.heavy_owner_contracts:,})",
        "events": f"{loaded.events:,}",
        "statuses": ", ".join(f"{k} {v:,}" for k, v in sorted(loaded.status_counts.items(), key=lambda kv: -kv[1])),
        "stale (>30m, non-terminal)": f"{loaded.stale:,}",
    }


def _fmt(samples: list[float]) -> str:
    if not samples:
        return f"{'-':>6} {'-':>6} {'-':>6}"
    return f"{percentile(samples, 0.5):6.2f} {percentile(samples, 0.95):6.2f} {percentile(samples, 0.99):6.2f}"


def print_table(results: list[Result]) -> None:
    head = (
        f"{'operation':<36} {'rows':>4} | {'service p50 p95 p99':>20} | {'HTTP p50 p95 p99':>20} | {'read':>7} | plan"
    )
    print(head)
    print("-" * len(head) + "-" * 40)
    for r in results:
        plan, read = "", ""
        if r.custom is not None:
            plan = f"{r.custom.kind}: {r.custom.detail}"
            read = f"{r.custom.examined:,}"
        rows = "-" if r.rows is None else str(r.rows)
        print(f"{r.name:<36} {rows:>4} | {_fmt(r.service_ms):>20} | {_fmt(r.http_ms):>20} | {read:>7} | {plan}")


def print_explain(results: list[Result]) -> None:
    print("EXPLAIN (ANALYZE) of the exact list statement the data layer ran, per query:")
    for r in results:
        if r.custom is None or r.generic is None:
            continue
        c, g = r.custom, r.generic
        print(f"  {r.name}")
        print(f"    one-off plan: {c.kind:<6} {c.ms:7.2f} ms, {c.examined:>7,} rows read: {c.detail}")
        print(f"    generic plan: {g.kind:<6} {g.ms:7.2f} ms, {g.examined:>7,} rows read: {g.detail}")


def flags(results: list[Result], generic_used: bool) -> list[str]:
    found: list[str] = []
    for r in results:
        why: list[str] = []
        if r.custom is not None and r.custom.kind == "seq":
            why.append("seq scan on contracts")
        if generic_used and r.generic is not None and r.generic.kind == "seq":
            why.append("seq scan in the generic plan, which the pool's prepared statement used")
        for layer, samples in (("service", r.service_ms), ("HTTP", r.http_ms)):
            if samples and percentile(samples, 0.95) > SLOW_P95_MS:
                why.append(f"{layer} p95 {percentile(samples, 0.95):.1f} ms > {SLOW_P95_MS:.0f} ms")
        if r.reads_whole_scope and r.custom is not None:
            why.append(f"reads {r.custom.examined:,} of the {r.scope_rows:,} contracts in scope for one page")
        if why:
            found.append(f"{r.name}: " + "; ".join(why))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_contracts", description=__doc__.split("\n")[0])
    parser.add_argument("--contracts", type=int, default=100_000, help="contracts to load (default 100000)")
    parser.add_argument("--owners", type=int, default=100, help="owners (users) to spread them over (default 100)")
    parser.add_argument("--requests", type=int, default=300, help="timed runs per operation and layer (default 300)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed of the generated data")
    parser.add_argument("--show-plans", action="store_true", help="print every EXPLAIN in full (text format)")
    parser.add_argument(
        "--try-index",
        action="append",
        default=[],
        metavar="SQL",
        help="a CREATE INDEX statement to run after the load (repeatable): try a candidate without a migration",
    )
    args = parser.parse_args(argv)
    if args.contracts < 1 or args.owners < 1 or args.requests < 1:
        parser.error("--contracts, --owners and --requests must be positive")

    started = time.perf_counter()
    load_before = os.getloadavg()
    with bench_database() as (url, where):
        t0 = time.perf_counter()
        applied = migrate(url)
        print(f"database ready ({where}), {len(applied)} migrations in {time.perf_counter() - t0:.1f} s", flush=True)
        loaded = load(url, args.contracts, args.owners, args.seed, args.try_index)
        copied = loaded.contracts + loaded.events + len(loaded.owners)
        load_line = (
            f"COPY of {copied:,} rows ({loaded.contracts:,} contracts, {loaded.events:,} events, "
            f"{len(loaded.owners)} users; indexes in place) in {loaded.copy_s:.1f} s = {copied / loaded.copy_s:,.0f} "
            f"rows/s; generating them {loaded.generate_s:.1f} s; VACUUM (ANALYZE) {loaded.analyze_s:.1f} s"
        )
        print(load_line, flush=True)
        bench = Bench(url, loaded, args.requests)
        results: list[Result] = []
        try:
            for op in LIST_OPS:
                print(f"measuring {op.name} ...", flush=True)
                results.append(bench.run_list(op))
            print("measuring get contract ...", flush=True)
            results.append(bench.run_get())
            print("measuring phase change ...", flush=True)
            results.append(bench.run_phase_change())
            prepared = bench.prepared_statements()
        finally:
            bench.close()
        facts = machine_facts(url, loaded, where)
        generic_used = any(p["generic_plans"] for p in prepared)
        flagged = flags(results, generic_used)
        plans_text: dict[str, tuple[str, str]] = {}
        with psycopg.connect(url, autocommit=True) as conn:
            for r in results:
                worth_showing = args.show_plans or any(f.startswith(f"{r.name}:") for f in flagged)
                if r.name in bench.statements and worth_showing:
                    q, p = bench.statements[r.name]
                    plans_text[r.name] = (explain_custom(conn, q, p, "TEXT"), explain_generic(conn, q, p, "TEXT"))

    print()
    print("Machine and data")
    for k, v in facts.items():
        print(f"  {k:<28} {v}")
    print(f"  {'load':<28} {load_line}")
    for statement in args.try_index:
        print(f"  {'extra index (--try-index)':<28} {statement}")
    load_after = os.getloadavg()
    print(
        f"  {'load average (1 min)':<28} {load_before[0]:.2f} at start, {load_after[0]:.2f} at end "
        "(anything else running on these cores shows in the p95/p99)"
    )
    print()
    print(
        f"Latency in ms over {args.requests} runs each (after 3 warm-up runs); rows = rows on the page; "
        "read = rows the contracts scan read for it (EXPLAIN ANALYZE)"
    )
    print_table(results)
    print()
    print_explain(results)
    print()
    custom = sum(int(p["custom_plans"] or 0) for p in prepared)
    generic = sum(int(p["generic_plans"] or 0) for p in prepared)
    print(
        f"The pool's connection prepared the list statement ({len(prepared)} parameter-type variants; psycopg "
        f"prepares after 5 runs): {custom:,} executions with a one-off (custom) plan, {generic:,} with the "
        "generic plan."
    )
    for name, (custom_text, generic_text) in plans_text.items():
        print()
        print(f"--- {name}: one-off (custom) plan ---")
        print(custom_text)
        print(f"--- {name}: generic plan ---")
        print(generic_text)
    print()
    if flagged:
        print("FLAGGED:")
        for line in flagged:
            print(f"  {line}")
    else:
        print("No seq scan on contracts, no plan reading its whole scope, and every p95 under 50 ms.")
    print(f"total runtime {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
