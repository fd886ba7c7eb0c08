"""Stale contract detection (seed 5.2): the scheduled job that tells monitors a contract went idle.

Once per stale episode, not once per run: ``stale_reports`` remembers the activity each contract was
reported for, so a contract idle for a day yields one ``stale_detected`` event, and another only after
it has done something and gone idle again. The events go through the outbox like every other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from makima.config import ContractsConfig
from makima.db import monitor as monitor_sql
from makima.db.connection import Database, transaction

ACTOR = "system:stale-detector"
# Contracts reported per transaction: a backlog (first run over old data) is worked off in bounded
# steps instead of one transaction that locks every idle contract at once.
BATCH = 500


@dataclass(frozen=True, slots=True)
class StaleRun:
    reported: int
    threshold_minutes: int

    def __bool__(self) -> bool:
        return self.reported > 0


def threshold_of(settings: ContractsConfig) -> timedelta:
    return timedelta(minutes=settings.stale_threshold_minutes)


def detect_stale_contracts(
    database: Database, threshold: timedelta, *, max_batches: int = 20, now: datetime | None = None
) -> StaleRun:
    """One run of the detector. ``now`` is the clock the threshold is measured against (the database's
    by default); tests pass a later one to say "31 minutes pass" without waiting."""
    reported = 0
    for _ in range(max_batches):
        with transaction(database) as conn:
            rows = monitor_sql.report_stale(conn, threshold, BATCH, ACTOR, now=now)
        reported += len(rows)
        if len(rows) < BATCH:
            break
    return StaleRun(reported, int(threshold.total_seconds() // 60))
