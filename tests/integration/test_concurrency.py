"""Task 1.2 under load: concurrent phase changes at one version serialise on the row lock."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from makima.db.connection import PooledDatabase
from makima.errors import MakimaError
from makima.services import contracts as svc
from tests.conftest import Caller

pytestmark = pytest.mark.integration

RACERS = 24


def test_concurrent_phase_changes_at_one_version(db: PooledDatabase, make_caller: Callable[..., Caller]) -> None:
    owner = make_caller()
    contract = svc.create_contract(
        db, owner.principal, name="race", description="", contract_type="specification", phase_guard=False
    )
    barrier = threading.Barrier(RACERS)
    outcomes: list[str] = []
    lock = threading.Lock()
    targets = ["specify", "plan", "execute", "review"]

    def racer(i: int) -> None:
        barrier.wait()
        try:
            svc.change_phase(db, owner.principal, contract.id, phase=targets[i % 4], expected_version=1, force=True)
            result = "ok"
        except MakimaError as exc:
            result = exc.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert Counter(outcomes) == {"ok": 1, "VERSION_CONFLICT": RACERS - 1}
    after = svc.get_contract(db, owner.principal, contract.id).contract
    assert after.version == 2
    events = svc.list_events(db, owner.principal, contract.id).items
    assert [e.type for e in events].count("phase_changed") == 1
