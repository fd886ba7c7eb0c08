"""Sync waits without I/O: the per-token and process limits of concurrent waits, the backing-off
schedule of reads where nothing notifies (a Lambda), and that a wait reads only when woken.

The coroutine is driven by hand (``send(None)``): the fakes never suspend, and an event loop would
open a socket pair, which this tier forbids."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, cast

import pytest

from makima.domain.principals import Principal, Role
from makima.domain.supervisors import SupervisorRecord
from makima.errors import RateLimited
from makima.services import supervisors
from makima.services.supervisors import MAX_SYNC_WAIT, SyncAsked, SyncResult
from makima.services.sync_waits import SyncWaits, WaitLimiter, Wakeup, poll_intervals, wait_for_sync

P = ParamSpec("P")
T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def principal() -> Principal:
    return Principal(uuid.uuid4(), Role.USER, uuid.uuid4())


def test_a_token_past_its_waits_is_refused_until_its_first_wait_ends() -> None:
    clock = Clock()
    limiter = WaitLimiter(per_token=2, total=0, clock=clock)
    alice, bob = principal(), principal()
    with limiter.admit(alice, 10), limiter.admit(alice, 4):
        clock.now += 1.5
        with pytest.raises(RateLimited) as refused, limiter.admit(alice, 1):
            pass
        assert refused.value.retry_after == 3  # the 4 s wait ends in 2.5 s
        assert refused.value.details["limit"] == {"kind": "sync_waits", "scope": "token", "concurrent": 2}
        # other tokens, and asking without waiting, are not limited by Alice's waits
        with limiter.admit(bob, 10), limiter.admit(alice, 0):
            assert (limiter.held(alice), limiter.held(bob), limiter.held()) == (2, 1, 3)
    assert limiter.held() == 0
    with limiter.admit(alice, 1):  # released: admitted again
        pass


def test_the_process_cap_refuses_every_token_past_it() -> None:
    clock = Clock()
    limiter = WaitLimiter(per_token=5, total=2, clock=clock)
    with limiter.admit(principal(), 7), limiter.admit(principal(), 3):
        with pytest.raises(RateLimited) as refused, limiter.admit(principal(), 1):
            pass
        assert (refused.value.retry_after, refused.value.details["limit"]["scope"]) == (3, "process")
    with limiter.admit(principal(), 1):
        pass


def test_a_refused_wait_leaves_the_counts_as_they_were() -> None:
    limiter = WaitLimiter(per_token=1, total=0, clock=Clock())
    alice = principal()
    with limiter.admit(alice, 5):
        for _ in range(3):
            with pytest.raises(RateLimited), limiter.admit(alice, 5):
                pass
        assert limiter.held(alice) == 1
    assert limiter.held(alice) == 0


def test_where_nothing_notifies_reads_back_off_to_a_few_per_wait() -> None:
    # the old wait read every 200 ms: 125 reads in the longest wait
    reads, waited = 0, 0.0
    for interval in poll_intervals():
        if waited >= MAX_SYNC_WAIT:
            break
        waited += interval
        reads += 1
    assert reads <= 16
    assert list(itertools.islice(poll_intervals(), 6)) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


# --- wait_for_sync, driven by hand ----------------------------------------------------------------------


def _record() -> SupervisorRecord:
    build: Any = SupervisorRecord.model_construct  # only passed through: no need for every field
    return cast(SupervisorRecord, build(state="working", last_heartbeat_at=None))


class Script(SyncWaits):
    """Wake-ups that move the clock by the scripted delays (None: sleep out the timeout)."""

    def __init__(self, clock: Clock, delays: list[float | None]) -> None:
        self.clock, self.delays, self.subscribed = clock, delays, 0

    @contextmanager
    def subscribe(self, contract_id: uuid.UUID) -> Iterator[Wakeup]:
        self.subscribed += 1
        script = self

        class _W:
            async def wait(self, timeout: float) -> None:
                delay = script.delays.pop(0) if script.delays else None
                script.clock.now += timeout if delay is None else min(delay, timeout)

        yield _W()


class Db:
    """The service calls, as the blocking runner sees them: delivered on the ``deliver_on``-th read."""

    def __init__(self, deliver_on: int | None) -> None:
        self.deliver_on, self.reads, self.asked = deliver_on, 0, 0

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if fn is supervisors.ask_sync:
            self.asked += 1
            return SyncAsked(uuid.uuid4(), datetime.now(UTC), _record())  # type: ignore[return-value]
        assert fn is supervisors.sync_delivered
        self.reads += 1
        return _record() if self.reads == self.deliver_on else None  # type: ignore[return-value]


def _run(coro: Coroutine[Any, Any, SyncResult]) -> SyncResult:
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    result: SyncResult = done.value.value
    return result


def _sync(clock: Clock, waits: SyncWaits, db: Db, wait: float) -> SyncResult:
    fake: Any = None
    return _run(
        wait_for_sync(fake, principal(), uuid.uuid4(), wait_seconds=wait, waits=waits, blocking=db, clock=clock)
    )


def test_a_wait_reads_only_when_woken_and_ends_on_the_delivery() -> None:
    clock = Clock()
    db = Db(deliver_on=2)
    r = _sync(clock, Script(clock, [0.01, 0.02]), db, 20)  # a spurious wake-up, then the delivery's
    assert (r.synced, r.waited_seconds, db.reads) == (True, 0.03, 2)


def test_a_wait_nobody_wakes_reads_once_at_its_end_and_is_not_synced() -> None:
    clock = Clock()
    db = Db(deliver_on=None)
    r = _sync(clock, Script(clock, []), db, 20)
    assert (r.synced, r.waited_seconds, db.reads) == (False, 20.0, 1)


def test_asking_without_waiting_subscribes_to_nothing_and_reads_nothing() -> None:
    clock = Clock()
    waits, db = Script(clock, []), Db(deliver_on=1)
    r = _sync(clock, waits, db, 0)
    assert (r.synced, waits.subscribed, db.asked, db.reads) == (False, 0, 1, 0)
