"""The local stack's scheduler runs each job on its interval, and one failing job does not stop others."""

from __future__ import annotations

import pytest

from makima.local.scheduler import Job, Scheduler

pytestmark = pytest.mark.unit


def test_jobs_run_when_due_and_failures_are_contained() -> None:
    ran: list[str] = []

    def boom() -> None:
        ran.append("boom")
        raise RuntimeError("job failed")

    s = Scheduler(
        [
            Job("fast", 10, lambda: ran.append("fast")),
            Job("boom", 30, boom),
            Job("slow", 60, lambda: ran.append("slow")),
        ]
    )
    s.run_due(0)
    assert ran == ["fast", "boom", "slow"]
    s.run_due(5)
    assert ran == ["fast", "boom", "slow"]  # nothing due yet
    s.run_due(10)
    s.run_due(30)
    assert ran[3:] == ["fast", "fast", "boom"]
    s.run_due(60)
    assert ran[6:] == ["fast", "boom", "slow"]
