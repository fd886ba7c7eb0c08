"""``api.concurrency.blocking``: what the endpoints rely on when they hand a service call to a thread
(issue 15 replaced anyio's ``to_thread`` with the event loop's ``run_in_executor``)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from makima.api import concurrency
from makima.api.concurrency import MAX_THREADS, blocking

REQUEST = contextvars.ContextVar[str]("request", default="none")


def test_a_call_runs_off_the_event_loop_in_the_callers_context() -> None:
    async def main() -> tuple[str, str, bool]:
        REQUEST.set("req-1")
        loop_thread = threading.current_thread()

        def service(a: int, *, b: int) -> tuple[str, str, bool]:
            return REQUEST.get(), f"{a + b}", threading.current_thread() is not loop_thread

        return await blocking(service, 1, b=2)

    assert asyncio.run(main()) == ("req-1", "3", True)


def test_a_context_variable_set_in_the_call_stays_there() -> None:
    async def main() -> str:
        REQUEST.set("outer")
        await blocking(REQUEST.set, "inner")
        return REQUEST.get()

    assert asyncio.run(main()) == "outer"


def test_an_exception_reaches_the_caller() -> None:
    def fails() -> None:
        raise LookupError("gone")

    with pytest.raises(LookupError, match="gone"):
        asyncio.run(blocking(fails))


def test_calls_overlap_up_to_the_limit() -> None:
    """Blocking calls run side by side (a slow query must not hold the others), at most MAX_THREADS."""
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(blocking(slow) for _ in range(MAX_THREADS + 10)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    assert peak == MAX_THREADS
    assert elapsed < 1.0  # two waves of 50 ms, not 50 calls one after the other (2.5 s)


def test_inline_calls_stay_on_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(concurrency, "_inline", True)

    async def main() -> bool:
        caller = threading.current_thread()
        return await blocking(lambda: threading.current_thread() is caller)

    assert asyncio.run(main())
