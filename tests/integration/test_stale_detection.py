"""Seed 5.2: stale detection — events for stale contracts, the configurable threshold, once per episode,
and candidates found through the index rather than a scan of every contract."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest

from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, SingleConnectionDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.statuses import ContractStatus
from makima.services import contracts as contracts_svc
from makima.services.stale import ACTOR, detect_stale_contracts
from tests.conftest import Caller

pytestmark = pytest.mark.integration


def _idle(database_url: str, contract_ids: list[uuid.UUID], hours: float) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - make_interval(secs => %s) WHERE id = ANY(%s)",
            (hours * 3600, contract_ids),
        )


def _stale_events(database_url: str, contract_id: uuid.UUID) -> list[dict[str, object]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT payload, actor FROM contract_events WHERE contract_id = %s AND type = 'stale_detected' ORDER BY id",
            (contract_id,),
        ).fetchall()
    return [{"payload": r[0], "actor": r[1]} for r in rows]


def test_the_threshold_decides_and_each_episode_is_reported_once(
    db: PooledDatabase, make_caller: Callable[..., Caller], database_url: str
) -> None:
    owner = make_caller().principal

    def contract(name: str) -> uuid.UUID:
        return contracts_svc.create_contract(
            db, owner, name=name, description="", contract_type="simple", phase_guard=False
        ).id

    two_hours, ten_minutes, finished = contract("2h idle"), contract("10m idle"), contract("done long ago")
    contracts_svc.change_status(db, owner, finished, status=ContractStatus.ACTIVE)
    contracts_svc.change_status(db, owner, finished, status=ContractStatus.COMPLETED)
    _idle(database_url, [two_hours, finished], 2)
    _idle(database_url, [ten_minutes], 10 / 60)
    detect_stale_contracts(db, timedelta(days=365))  # (nothing is that old: a no-op run)

    # With a 3-hour threshold nothing of these is stale; with 30 minutes the 2-hour one is; with 5 the 10-minute one too
    detect_stale_contracts(db, timedelta(hours=3))
    assert _stale_events(database_url, two_hours) == []
    detect_stale_contracts(db, timedelta(minutes=30))
    detect_stale_contracts(db, timedelta(minutes=5))
    (event,) = _stale_events(database_url, two_hours)
    assert len(_stale_events(database_url, ten_minutes)) == 1
    # A finished contract is never stale
    assert _stale_events(database_url, finished) == []
    # The event says since when and for how long, and who reported it
    assert event["actor"] == ACTOR
    payload = event["payload"]
    assert isinstance(payload, dict)
    assert 7190 <= payload["stale_duration_secs"] <= 7300
    assert payload["last_activity"]

    # Running again reports nothing new for the same episode
    detect_stale_contracts(db, timedelta(minutes=5))
    assert len(_stale_events(database_url, two_hours)) == 1

    # Activity ends the episode; idle again past the threshold is a new one
    contracts_svc.update_contract(
        db, owner, two_hours, name=None, description="touched", phase_guard=None, expected_version=None
    )
    detect_stale_contracts(db, timedelta(minutes=5))
    assert len(_stale_events(database_url, two_hours)) == 1
    _idle(database_url, [two_hours], 1)
    detect_stale_contracts(db, timedelta(minutes=5))
    assert len(_stale_events(database_url, two_hours)) == 2


def test_candidates_come_from_the_index_not_a_scan(fresh_database: Callable[[str], str]) -> None:
    # Given 50,000 contracts, 2% of them live and most of those busy
    url = fresh_database("makima_stale_plan")
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        owner = conn.execute("INSERT INTO users (name, role) VALUES ('bulk', 'user') RETURNING id").fetchone()
        assert owner is not None
        conn.execute(
            """
            INSERT INTO contracts (owner_id, name, contract_type, phase, status, last_activity_at)
            SELECT %s, 'c' || g, 'simple', 'plan',
                   CASE WHEN g %% 50 = 0 THEN 'active' ELSE 'completed' END,
                   now() - make_interval(mins => g %% 300)
              FROM generate_series(1, 50000) AS g
            """,
            (owner[0],),
        )
        conn.execute("ANALYZE contracts")
        conn.execute("ANALYZE stale_reports")
    # When the detector's statement is planned
    database = SingleConnectionDatabase(url)
    try:
        with transaction(database) as conn:
            plan = "\n".join(
                str(r["QUERY PLAN"])
                for r in conn.execute(
                    "EXPLAIN " + monitor_sql.REPORT_STALE_SQL,
                    {"threshold": timedelta(minutes=30), "limit": 500, "actor": ACTOR, "now": None},
                ).fetchall()
            )
        # Then the candidates come from the partial index of live contracts, not a scan of all of them
        assert "idx_contracts_stale" in plan, plan
        assert "Seq Scan on contracts" not in plan, plan
        # And the run reports exactly the live contracts idle for longer than 30 minutes
        run = detect_stale_contracts(database, timedelta(minutes=30))
    finally:
        database.close()
    expected = sum(1 for g in range(1, 50001) if g % 50 == 0 and g % 300 > 30)
    assert run.reported == expected
