"""The local stack's drain of the outbox (``services/monitor.py: drain_in_process``, the pump's): one
statement marks the oldest unpublished events and returns them (it was a transaction of four round trips
after every write: issue 15); they are published in the order they were logged; and a publish that
fails puts them back in the outbox for the next drain, so nothing is lost to a failing publisher.

AWS's drain (claim, publish, mark in one transaction) keeps its own tests: test_monitor_aws.py,
test_scheduled_jobs_over_time.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, transaction
from makima.services import monitor as svc
from tests.conftest import Caller
from tests.integration.round_trips import Counting

pytestmark = pytest.mark.integration


class Recording:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.events: list[Mapping[str, Any]] = []

    def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self.fail:
            raise RuntimeError("the bus is down")
        self.events.extend(events)


def _drain_all(db: PooledDatabase) -> None:
    svc.drain_in_process(db, Recording())


def _unpublished(db: PooledDatabase) -> int:
    with transaction(db) as conn:
        return monitor_sql.unpublished_count(conn)


def test_a_drain_is_one_statement_and_publishes_in_log_order(
    db: PooledDatabase, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    _drain_all(db)
    made = [new_contract(user, name=f"pump-{i}")["id"] for i in range(3)]  # one contract_created each
    counting, publisher = Counting(db), Recording()
    assert svc.drain_in_process(counting, publisher) >= 3
    assert counting.calls == ["execute"]  # the claim-publish-mark transaction was 4 round trips
    ours = [e for e in publisher.events if str(e["contract_id"]) in made]
    assert [str(e["contract_id"]) for e in ours] == made
    ids = [int(e["id"]) for e in publisher.events]
    assert ids == sorted(ids)
    assert _unpublished(db) == 0
    assert svc.drain_in_process(counting, publisher) == 0  # nothing twice


def test_a_failed_publish_puts_the_events_back_for_the_next_drain(
    db: PooledDatabase, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    _drain_all(db)
    made = new_contract(user, name="pump-fail")["id"]
    with pytest.raises(RuntimeError, match="the bus is down"):
        svc.drain_in_process(db, Recording(fail=True))
    assert _unpublished(db) >= 1
    publisher = Recording()
    svc.drain_in_process(db, publisher)
    assert [e["type"] for e in publisher.events if str(e["contract_id"]) == made] == ["contract_created"]
    assert _unpublished(db) == 0
