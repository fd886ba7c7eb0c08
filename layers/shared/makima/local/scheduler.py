"""The local stack's stand-in for the EventBridge schedules: the same jobs, on the same intervals, in
a background thread. Each job runs the same service function its Lambda runs on AWS."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from makima.config import Settings
from makima.db.connection import Database
from makima.flags import Flag, Flags, build_flags
from makima.services import backfill, daemons, stale, supervisors
from makima.services.monitor import Publisher, drain_outbox

log = logging.getLogger("makima.scheduler")


@dataclass
class Job:
    name: str
    every: float  # seconds
    run: Callable[[], object]
    next_at: float = 0.0


def jobs_for(db: Database, settings: Settings, publisher: Publisher, flags: Flags | None = None) -> list[Job]:
    """The template's schedules (tests/infra checks the template against the same intervals).

    The local outbox pump already publishes every second; the sweeper job is here for parity with
    AWS, and catches what the pump could not publish (the pump's own retries do the same). Flags are
    read on each run, as the Lambda jobs read them: the timeout sweep stands still while
    ``supervisor_heartbeat`` is off, and stale detection (part of ``monitoring_dashboard``) does nothing
    while that flag is off."""
    timeout = timedelta(seconds=settings.contracts.heartbeat_timeout_seconds)
    threshold = stale.threshold_of(settings.contracts)
    worktree_retention = timedelta(days=settings.contracts.removed_worktree_retention_days)
    gate = flags if flags is not None else build_flags(settings)

    def supervisor_timeouts() -> object:
        enabled = gate.enabled(Flag.SUPERVISOR_HEARTBEAT)
        return supervisors.detect_dead_supervisors(db, timeout, heartbeats_enabled=enabled)

    return [
        Job("supervisor_timeouts", 60.0, supervisor_timeouts),
        Job("heartbeat_retention", 3600.0, lambda: supervisors.maintain_heartbeat_partitions(db)),
        Job("worktree_retention", 3600.0, lambda: daemons.purge_removed_worktrees(db, worktree_retention)),
        Job(
            "stale_detector",
            float(settings.contracts.stale_detection_interval_seconds),
            lambda: stale.detect_stale_contracts(db, threshold) if gate.enabled(Flag.MONITORING_DASHBOARD) else None,
        ),
        Job("outbox_sweeper", 60.0, lambda: drain_outbox(db, publisher, older_than=timedelta(seconds=10))),
        # Continues a data backfill a migrate left unfinished; logs only the runs that wrote something.
        Job("backfill", 300.0, lambda: [r for r in backfill.run_all(db) if r.batches]),
    ]


class Scheduler:
    def __init__(self, jobs: list[Job], tick: float = 1.0) -> None:
        self.jobs = jobs
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="makima-scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_due(self, now: float) -> None:
        for job in self.jobs:
            if now >= job.next_at:
                job.next_at = now + job.every
                try:
                    result = job.run()
                    if result:
                        log.info("%s: %s", job.name, result)
                except Exception:  # a failing job must not stop the others; it retries next interval
                    log.exception("scheduled job %s failed", job.name)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_due(time.monotonic())
            self._stop.wait(self.tick)
