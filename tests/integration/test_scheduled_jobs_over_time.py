"""Stale detection and the outbox sweeper over time, against a controllable clock: each job is called
with ``now`` set to "later", so "31 minutes pass" and "the publish failed, then the sweeper runs" are
tests, not hopes. (The supervisor timeout and heartbeat retention jobs have theirs in
tests/integration/test_supervisor_lifecycle.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from makima.db.connection import PooledDatabase, transaction
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus
from makima.services import contracts as contracts_svc
from makima.services.monitor import drain_outbox
from makima.services.stale import detect_stale_contracts
from tests.conftest import Caller

pytestmark = pytest.mark.integration

THRESHOLD = timedelta(minutes=30)


def _db_now(db: PooledDatabase) -> datetime:
    with transaction(db) as conn:
        row = conn.execute("SELECT now() AS now").fetchone()
    assert row is not None
    value = row["now"]
    assert isinstance(value, datetime)
    return value


def _events(db: PooledDatabase, owner: Principal, contract_id: uuid.UUID, type: str) -> list[dict[str, Any]]:
    return [e.payload for e in contracts_svc.list_events(db, owner, contract_id, limit=1000).items if e.type == type]


def test_a_contract_goes_stale_once_per_idle_spell_as_time_passes(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller().principal
    c = contracts_svc.create_contract(db, owner, name="idle", description="", contract_type="simple", phase_guard=False)
    contracts_svc.change_status(db, owner, c.id, status=ContractStatus.ACTIVE)
    start = _db_now(db)

    # 29 minutes pass: not stale yet
    detect_stale_contracts(db, THRESHOLD, now=start + timedelta(minutes=29))
    assert _events(db, owner, c.id, "stale_detected") == []
    # 31 minutes: stale, reported once, with how long it has been idle
    detect_stale_contracts(db, THRESHOLD, now=start + timedelta(minutes=31))
    (first,) = _events(db, owner, c.id, "stale_detected")
    assert 31 * 60 - 5 <= first["stale_duration"] <= 31 * 60 + 5
    assert first["stale_duration_secs"] == first["stale_duration"]
    # Two more hours of runs every minute: still the same one episode
    for minute in range(32, 150, 7):
        detect_stale_contracts(db, THRESHOLD, now=start + timedelta(minutes=minute))
    assert len(_events(db, owner, c.id, "stale_detected")) == 1

    # Activity ends the episode; the next idle spell is reported again, only once it is past the threshold
    contracts_svc.complete_deliverable(db, owner, c.id, deliverable_id="plan-document")
    again = _db_now(db)
    detect_stale_contracts(db, THRESHOLD, now=again + timedelta(minutes=20))
    assert len(_events(db, owner, c.id, "stale_detected")) == 1
    detect_stale_contracts(db, THRESHOLD, now=again + timedelta(minutes=45))
    assert len(_events(db, owner, c.id, "stale_detected")) == 2

    # A finished contract is never stale, however long it sits
    contracts_svc.change_status(db, owner, c.id, status=ContractStatus.COMPLETED)
    detect_stale_contracts(db, THRESHOLD, now=again + timedelta(days=30))
    assert len(_events(db, owner, c.id, "stale_detected")) == 2


class Refusing:
    """A publisher whose bus is down: nothing it is handed is published."""

    def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        raise ConnectionError("the bus is unreachable")


class Recording:
    def __init__(self) -> None:
        self.published: list[Mapping[str, Any]] = []

    def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.published.extend(events)


def test_an_event_whose_publish_failed_is_swept_once_its_age_passes(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    # Given whatever earlier tests left published, and one new change whose own publish failed
    drain_outbox(db, Recording())
    owner = make_caller().principal
    c = contracts_svc.create_contract(
        db, owner, name="swept", description="", contract_type="simple", phase_guard=False
    )
    with pytest.raises(ConnectionError):
        drain_outbox(db, Refusing())
    start = _db_now(db)
    sweeper = Recording()

    # When the sweeper runs 5 s later, the event is younger than its 10 s: a writer's publish may still take it
    assert drain_outbox(db, sweeper, older_than=timedelta(seconds=10), now=start + timedelta(seconds=5)) == []
    # When it runs a minute later, it publishes it, exactly once
    swept = drain_outbox(db, sweeper, older_than=timedelta(seconds=10), now=start + timedelta(minutes=1))
    assert [(e["type"], e["contract_id"]) for e in swept] == [("contract_created", str(c.id))]
    assert drain_outbox(db, sweeper, older_than=timedelta(seconds=10), now=start + timedelta(minutes=2)) == []
    assert len(sweeper.published) == 1
