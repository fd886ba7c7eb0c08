"""The counters of GET /metrics never go down when rows are deleted (issue 17, item 7).

``supervisor_heartbeats_total`` was a sum over live ``supervisor_states`` rows: the batch cleanup of
archived contracts deleted their supervisors and the counter dropped, which Prometheus reads as a
reset. The event counters are counts of ``contract_events`` rows, which a purge may delete. Migration
0009 keeps what deleted rows had counted in ``metric_counter_offsets``, and the scrape adds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.db.connection import PooledDatabase
from makima.domain.principals import Role
from tests.conftest import Caller
from tests.integration.test_metrics import API, COUNTERS, Sample, World, batch_event, complete_by_itself, scrape

pytestmark = pytest.mark.integration


def counters(sample: dict[Sample, float]) -> dict[Sample, float]:
    return {k: v for k, v in sample.items() if k[0] in COUNTERS}


def assert_none_went_down(before: dict[Sample, float], after: dict[Sample, float]) -> None:
    went_down = {k: (v, after.get(k)) for k, v in counters(before).items() if after.get(k, 0) < v}
    assert went_down == {}, f"counters went down (before, after): {went_down}"


def _age(database_url: str, contract_id: str, hours: float) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE contracts SET status_changed_at = now() - make_interval(secs => %(s)s),"
            " last_activity_at = now() - make_interval(secs => %(s)s) WHERE id = %(id)s",
            {"s": hours * 3600, "id": contract_id},
        )


def test_deleting_contracts_and_events_never_makes_a_counter_go_down(
    client: TestClient, db: PooledDatabase, database_url: str, make_caller: Callable[..., Caller]
) -> None:
    admin = make_caller(role=Role.ADMIN)
    w = World(client, make_caller())

    # Given two supervised contracts with heartbeats and a restore, work that moved phases and completed
    # a contract, and batch summaries
    supervised = []
    for _ in range(2):
        cid, task_id = w.supervised()
        for _ in range(3):
            w.beat(cid, task_id)
        supervised.append(cid)
    assert w.post(f"/contracts/{supervised[0]}/supervisor/restore", {})["generation"] == 2
    manual = w.contract("active")
    w.post(f"/contracts/{manual}/phase", {"phase": "execute", "expected_version": 2, "force": True})
    complete_by_itself(client, w.caller)
    batch_event(db, "monotonic-test")
    # And both supervised contracts finished and archived, long ago
    for cid in supervised:
        w.post(f"/contracts/{cid}/status", {"status": "completed"})
        w.post(f"/contracts/{cid}/status", {"status": "archived"})
        _age(database_url, cid, hours=48)
    first = scrape(client, admin)
    assert first[("supervisor_heartbeats_total", ())] >= 6
    assert first[("batch_operations_total", (("operation", "monotonic-test"),))] == 1

    # When the real batch path deletes the first (its supervisor state goes with it)
    r = client.post(
        f"{API}/contracts/batch",
        json={"operation": "cleanup_archived", "older_than_hours": 24, "contract_ids": [supervised[0]]},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["affected_ids"] == [supervised[0]]
    with psycopg.connect(database_url) as conn:
        gone = conn.execute(
            "SELECT count(*) FROM supervisor_states WHERE contract_id = %s", (uuid.UUID(supervised[0]),)
        ).fetchone()
    assert gone == (0,), "the cleanup deleted the supervisor's row (else this test proves nothing)"

    # Then no counter went down; the heartbeats it had counted are still counted
    second = scrape(client, admin)
    assert_none_went_down(first, second)
    assert second[("supervisor_heartbeats_total", ())] == first[("supervisor_heartbeats_total", ())]

    # When an operator deletes the other contract and purges events directly (one of each counted type)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM contracts WHERE id = %s", (uuid.UUID(supervised[1]),))
        purged = conn.execute(
            """
            DELETE FROM contract_events
             WHERE id IN (SELECT max(id) FROM contract_events
                           WHERE type IN ('phase_changed', 'completion_detected', 'supervisor_restored')
                              OR (type = 'batch_operation' AND payload->>'operation' = 'monotonic-test')
                           GROUP BY type)
            RETURNING type
            """
        ).fetchall()
    assert sorted(t for (t,) in purged) == [
        "batch_operation",
        "completion_detected",
        "phase_changed",
        "supervisor_restored",
    ]

    # Then still no counter went down, the batch label included
    third = scrape(client, admin)
    assert_none_went_down(second, third)
    assert counters(third) == counters(second)
    assert third[("batch_operations_total", (("operation", "monotonic-test"),))] == 1

    # And counting goes on from there
    again = w.contract("active")
    w.post(f"/contracts/{again}/phase", {"phase": "execute", "expected_version": 2, "force": True})
    fourth = scrape(client, admin)
    assert fourth[("phase_transitions_total", ())] == third[("phase_transitions_total", ())] + 1
