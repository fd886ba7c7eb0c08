"""GET /metrics against the real database: the seed's seven metrics are the database's truth, admins only,
counters only grow, the stale gauge follows the configured threshold, and the event counts are read
through the event-type index."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from makima.api.app import create_app
from makima.config import ContractsConfig, Settings
from makima.db import events as events_sql
from makima.db import metrics as metrics_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.principals import Role
from makima.domain.statuses import ContractStatus
from tests.conftest import Caller
from tests.drivers import Driver

pytestmark = pytest.mark.integration
API = "/api/v1"
TERMINAL = ("completed", "failed", "archived")

Sample = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)
COUNTERS = (
    "phase_transitions_total",
    "completion_detections_total",
    "supervisor_heartbeats_total",
    "supervisor_restarts_total",
    "batch_operations_total",
)


def parse(text: str) -> dict[Sample, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client: TestClient, caller: Caller) -> dict[Sample, float]:
    r = client.get("/metrics", headers=caller.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(r.text)


def truth(database_url: str, stale_minutes: int) -> dict[Sample, float]:
    """What the metrics should say, asked of the database directly (and differently: one grouping of
    the whole event log rather than the endpoint's per-type counts)."""
    with psycopg.connect(database_url) as conn:
        statuses: dict[str, int] = dict(
            conn.execute("SELECT status, count(*) FROM contracts GROUP BY status").fetchall()
        )
        stale_row = conn.execute(
            "SELECT count(*) FROM contracts WHERE NOT (status = ANY(%s))"
            " AND last_activity_at < now() - make_interval(mins => %s)",
            (list(TERMINAL), stale_minutes),
        ).fetchone()
        types: dict[str, int] = dict(
            conn.execute("SELECT type, count(*) FROM contract_events GROUP BY type").fetchall()
        )
        batches = conn.execute(
            "SELECT payload->>'operation', count(*) FROM contract_events WHERE type = 'batch_operation' GROUP BY 1"
        ).fetchall()
        beats_row = conn.execute("SELECT coalesce(sum(heartbeat_count), 0) FROM supervisor_states").fetchone()
        # What deleted rows had counted (migration 0009): counters count them still
        offsets: dict[tuple[str, str], int] = {
            (c, label): v for c, label, v in conn.execute("SELECT counter, label, value FROM metric_counter_offsets")
        }
    assert stale_row is not None
    assert beats_row is not None
    expected: dict[Sample, float] = {
        ("contracts_by_status", (("status", s.value),)): statuses.get(s.value, 0) for s in ContractStatus
    }
    expected[("contracts_stale_count", ())] = stale_row[0]
    expected[("phase_transitions_total", ())] = types.get("phase_changed", 0) + offsets.get(
        ("phase_transitions", ""), 0
    )
    expected[("completion_detections_total", ())] = types.get("completion_detected", 0) + offsets.get(
        ("completion_detections", ""), 0
    )
    expected[("supervisor_restarts_total", ())] = types.get("supervisor_restored", 0) + offsets.get(
        ("supervisor_restarts", ""), 0
    )
    expected[("supervisor_heartbeats_total", ())] = beats_row[0] + offsets.get(("supervisor_heartbeats", ""), 0)
    for operation, n in batches:
        expected[("batch_operations_total", (("operation", operation),))] = n
    for (counter, label), n in offsets.items():
        if counter == "batch_operations":
            key: Sample = ("batch_operations_total", (("operation", label),))
            expected[key] = expected.get(key, 0) + n
    return expected


def delta(after: dict[Sample, float], before: dict[Sample, float]) -> dict[Sample, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def now() -> str:
    return datetime.now(UTC).isoformat()


def batch_event(db: PooledDatabase, operation: str) -> None:
    """The one event the batch endpoint records per batch (contract_id NULL), written directly."""
    with transaction(db) as conn:
        events_sql.append(
            conn,
            contract_id=None,
            owner_id=None,
            type="batch_operation",
            payload={"operation": operation, "affected_count": 2, "error_count": 0, "dry_run": False},
            actor="system:test",
        )


class World:
    """An owner's contracts driven over the API."""

    def __init__(self, client: TestClient, caller: Caller) -> None:
        self.client, self.caller = client, caller

    def post(self, path: str, body: dict[str, Any] | None = None, expect: int = 200) -> dict[str, Any]:
        r = self.client.post(f"{API}{path}", json=body, headers=self.caller.headers)
        assert r.status_code == expect, r.text
        return dict(r.json())

    def contract(self, *statuses: str, **fields: Any) -> str:
        """A new contract, moved through ``statuses`` in order."""
        cid = str(self.post("/contracts", {"name": "metrics", **fields}, expect=201)["id"])
        for status in statuses:
            self.post(f"/contracts/{cid}/status", {"status": status})
        return cid

    def supervised(self) -> tuple[str, str]:
        """A contract whose supervisor runs on a new daemon: (contract id, supervisor task id)."""
        daemon = self.post("/daemons", {"name": f"metrics-{uuid.uuid4().hex[:8]}"}, expect=201)
        cid = str(self.post("/contracts", {"name": "supervised"}, expect=201)["id"])
        started = self.post(f"/contracts/{cid}/supervisor", {"daemon_id": daemon["id"]}, expect=201)
        return cid, str(started["supervisor"]["task_id"])

    def beat(self, cid: str, task_id: str) -> None:
        body = {"task_id": task_id, "state": "working", "phase": "plan", "timestamp": now()}
        assert self.post(f"/contracts/{cid}/supervisor/heartbeat", body)["accepted"] is True


def complete_by_itself(client: TestClient, caller: Caller) -> None:
    """A "simple" contract worked through: it advances to execute and completes on its own."""
    d = Driver(client, caller.headers, "simple")
    d.start()
    for deliverables in (["plan-document"], ["implementation", "pull-request"]):
        task = d.task("work")
        for x in deliverables:
            d.deliver(x)
        d.finish(task)
    assert (d.get()["status"], d.get()["phase"]) == ("completed", "execute")


def age(database_url: str, minutes: int, *contract_ids: str) -> None:
    """No activity for ``minutes`` (there is no API to make time pass)."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - make_interval(mins => %s) WHERE id = ANY(%s)",
            (minutes, [uuid.UUID(c) for c in contract_ids]),
        )


@pytest.fixture
def admin_caller(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller(role=Role.ADMIN)


def test_metrics_are_the_database_truth(
    client: TestClient,
    db: PooledDatabase,
    database_url: str,
    make_caller: Callable[..., Caller],
    admin_caller: Caller,
) -> None:
    stale_minutes = client.app.state.settings.contracts.stale_threshold_minutes  # type: ignore[attr-defined]
    before = scrape(client, admin_caller)
    w = World(client, make_caller())

    # Given contracts in every status, one of them idle past the threshold, a finished one idle too
    w.contract()
    idle = w.contract("active")
    waiting = w.contract("active")
    w.post(f"/contracts/{waiting}/questions", {"question": "which database?"}, expect=201)
    w.contract("paused")
    w.contract("active", "blocked")
    w.contract("active", "completing")
    finished = w.contract("active", "completed")
    w.contract("failed")
    w.contract("archived")
    # And a manual phase change, and a contract that advances and completes by itself
    w.post(f"/contracts/{idle}/phase", {"phase": "execute", "expected_version": 2, "force": True})
    complete_by_itself(client, w.caller)
    # And a supervisor with three heartbeats, two more in a daemon's batch, a restart request and a restore
    sup, task_id = w.supervised()
    for _ in range(3):
        w.beat(sup, task_id)
    hb = {"task_id": task_id, "contract_id": sup, "state": "working", "phase": "plan"}
    batch = w.post("/supervisors/heartbeats", {"heartbeats": [{**hb, "timestamp": now()}, {**hb, "timestamp": now()}]})
    assert batch["accepted"] == 2, batch
    w.post(f"/contracts/{sup}/supervisor/restart", {"reason": "stuck"})  # a request: not a restart yet
    assert w.post(f"/contracts/{sup}/supervisor/restore", {})["generation"] == 2
    # And three batches, as the batch endpoint records them
    for operation in ("pause", "pause", "archive"):
        batch_event(db, operation)
    age(database_url, stale_minutes + 5, idle, finished)

    # When an admin scrapes
    after = scrape(client, admin_caller)

    # Then every metric is what the database says, every status listed
    assert after == truth(database_url, stale_minutes)
    assert {k[1][0][1] for k in after if k[0] == "contracts_by_status"} == {s.value for s in ContractStatus}
    # And it moved by exactly what happened here
    heartbeat_count = client.get(f"{API}/contracts/{sup}/supervisor/status", headers=w.caller.headers).json()
    assert heartbeat_count["heartbeat_count"] == 5
    expected_delta = {
        ("contracts_by_status", (("status", "created"),)): 1,
        ("contracts_by_status", (("status", "active"),)): 2,  # the idle one, the supervised one
        ("contracts_by_status", (("status", "waiting_for_input"),)): 1,
        ("contracts_by_status", (("status", "paused"),)): 1,
        ("contracts_by_status", (("status", "blocked"),)): 1,
        ("contracts_by_status", (("status", "completing"),)): 1,
        ("contracts_by_status", (("status", "completed"),)): 2,  # by hand, by itself
        ("contracts_by_status", (("status", "failed"),)): 1,
        ("contracts_by_status", (("status", "archived"),)): 1,
        ("contracts_stale_count", ()): 1,  # the completed one is idle too, but finished
        ("phase_transitions_total", ()): 2,  # one by hand, one auto-advance
        ("completion_detections_total", ()): 1,
        ("supervisor_heartbeats_total", ()): 5,
        ("supervisor_restarts_total", ()): 1,
        ("batch_operations_total", (("operation", "pause"),)): 2,
        ("batch_operations_total", (("operation", "archive"),)): 1,
    }
    assert delta(after, before) == expected_delta


def test_only_admins_may_scrape(client: TestClient, make_caller: Callable[..., Caller], admin_caller: Caller) -> None:
    owner = make_caller()
    for caller in (owner, make_caller(daemon_for=owner)):
        r = client.get("/metrics", headers=caller.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    for headers in ({}, {"Authorization": "Bearer mkm_not-a-real-token"}):
        r = client.get("/metrics", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHORIZED")
    assert client.get("/metrics", headers=admin_caller.headers).status_code == 200
    # and it is at the root only
    assert client.get(f"{API}/metrics", headers=admin_caller.headers).status_code == 404


def test_counters_never_decrease(
    client: TestClient, db: PooledDatabase, make_caller: Callable[..., Caller], admin_caller: Caller
) -> None:
    w = World(client, make_caller())
    sup, task_id = w.supervised()
    scrapes = [scrape(client, admin_caller)]
    # As work goes on: phase changes, completions, heartbeats, restores, batches, contracts archived
    for i in range(3):
        cid = w.contract("active")
        w.post(f"/contracts/{cid}/phase", {"phase": "execute", "expected_version": 2, "force": True})
        complete_by_itself(client, w.caller)
        w.beat(sup, task_id)
        w.post(f"/contracts/{sup}/supervisor/restore", {})
        batch_event(db, "pause" if i % 2 else "resume")
        w.post(f"/contracts/{cid}/status", {"status": "completed"})
        w.post(f"/contracts/{cid}/status", {"status": "archived"})
        scrapes.append(scrape(client, admin_caller))

    # Then no counter sample ever goes down, and each one went up
    for earlier, later in itertools.pairwise(scrapes):
        for key, value in earlier.items():
            if key[0] in COUNTERS:
                assert later[key] >= value, key
    first, last = scrapes[0], scrapes[-1]
    for name in COUNTERS[:4]:
        assert last[(name, ())] > first[(name, ())], name
    assert last[("batch_operations_total", (("operation", "resume"),))] >= 2


@pytest.fixture
def strict_client(db: PooledDatabase) -> Iterator[TestClient]:
    """The app with a 5-minute stale threshold."""
    settings = Settings(contracts=ContractsConfig(stale_threshold_minutes=5))
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as c:
        yield c


def test_the_stale_gauge_follows_the_configured_threshold(
    client: TestClient,
    strict_client: TestClient,
    database_url: str,
    make_caller: Callable[..., Caller],
    admin_caller: Caller,
) -> None:
    # Given the gauge under a 5-minute and under the default (30-minute) threshold
    key: Sample = ("contracts_stale_count", ())
    strict, default = scrape(strict_client, admin_caller)[key], scrape(client, admin_caller)[key]

    # When a contract has been idle for 10 minutes, and a paused one too (paused can still do work)
    w = World(client, make_caller())
    age(database_url, 10, w.contract("active"), w.contract("paused"), w.contract("failed"))

    # Then the 5-minute threshold counts both, the 30-minute one neither
    assert scrape(strict_client, admin_caller)[key] == strict + 2
    assert scrape(client, admin_caller)[key] == default


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_event_counts_are_index_only_scans_of_the_type_index(db: PooledDatabase) -> None:
    # Given the event log as autovacuum keeps an append-only table (all-visible), and the scrape's
    # statement planned as for a large log: on a few test rows a sequential or bitmap scan is cheaper,
    # so they are priced out (with a million events the planner picks the index-only scans by itself)
    with db.connection() as conn:
        conn.execute("VACUUM (ANALYZE) contract_events")
    with db.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        # The full-table index on last_activity_at (batches filter on it) is as good as the live ones on
        # a few hundred test rows, where the stale count's range holds none, and the planner took it in
        # some runs: out of this transaction's sight (the DROP is rolled back), the question is whether
        # the statement *can* be served by an index over live contracts only, which is the code's part
        # (the predicate repeated word for word); at scale the partial index is the smaller
        # (docs/performance.md, "Contracts at scale").
        conn.execute("DROP INDEX idx_contracts_last_activity")
        [row] = conn.execute(
            "EXPLAIN (FORMAT JSON) " + metrics_sql.SNAPSHOT_SQL, {"stale_threshold": timedelta(minutes=30)}
        ).fetchall()
        raise psycopg.Rollback  # the index stays
    with db.connection() as conn:
        assert conn.execute("SELECT to_regclass('idx_contracts_last_activity') IS NOT NULL AS kept").fetchone() == {
            "kept": True
        }
    nodes = list(_plan_nodes(row["QUERY PLAN"][0]["Plan"]))

    # Then the three plain event counts are index-only scans of idx_contract_events_type
    index_only = [
        n["Index Cond"]
        for n in nodes
        if n["Node Type"] == "Index Only Scan" and n.get("Index Name") == "idx_contract_events_type"
    ]
    assert sorted(index_only) == [
        "(type = 'completion_detected'::text)",
        "(type = 'phase_changed'::text)",
        "(type = 'supervisor_restored'::text)",
    ]
    # And the batch count (it needs the payload) finds its rows through the same index
    on_events = [n for n in nodes if n.get("Relation Name") == "contract_events"]
    assert all(n["Node Type"] != "Seq Scan" for n in on_events)
    assert any(
        n.get("Index Name") == "idx_contract_events_type" and "batch_operation" in n.get("Index Cond", "")
        for n in nodes
    )
    # And the stale count reads only contracts that can still do work, through a partial index over
    # them (its predicate repeated word for word makes those usable). Which of them wins depends on the
    # statistics the earlier tests left (idx_contracts_stale on a large table; on a few hundred rows the
    # planner may take idx_contracts_live_created and filter), so any of them will do; a full-table
    # index or scan will not.
    live_indexes = {"idx_contracts_stale", "idx_contracts_live_created", "idx_contracts_owner_live_created"}
    on_contracts = [n for n in nodes if n.get("Relation Name") == "contracts" and "last_activity_at" in str(n)]
    assert on_contracts, nodes
    chosen = [(n["Node Type"], n.get("Index Name"), n.get("Index Cond"), n.get("Filter")) for n in on_contracts]
    assert all(n.get("Index Name") in live_indexes for n in on_contracts), chosen
