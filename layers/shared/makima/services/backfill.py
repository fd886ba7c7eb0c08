"""The data backfills as a background job (seed: "Data Backfill: run as background job, not blocking
migration"): batches of ``makima.db.backfill.BATCH`` rows, one short transaction each, for at most a
time budget per run.

Two callers run the same batches (``makima.db.backfill.step``): ``makima db migrate``, which drives a
backfill to its end before the migration that needs it (the activity columns become NOT NULL only
once every row has a value, so no reader ever meets a NULL), and the scheduled job (the local stack's
scheduler, the ``backfill`` function on AWS), which continues a backfill a migrate left unfinished and
otherwise finds every backfill finished at the cost of one lookup each. Neither holds a lock writers
queue behind for longer than one batch of row locks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from makima.db import backfill as backfill_sql
from makima.db.connection import Database, transaction

# What one scheduled run may spend: well inside the function's 29 s timeout; the next run continues.
BUDGET = timedelta(seconds=20)


@dataclass(frozen=True, slots=True)
class BackfillRun:
    """What one run did: batches and rows written, and whether the backfill is now complete."""

    name: str
    batches: int
    rows_updated: int
    finished: bool


def run(
    database: Database,
    name: str = backfill_sql.CONTRACT_ACTIVITY,
    *,
    batch_size: int = backfill_sql.BATCH,
    budget: timedelta | None = BUDGET,
    now: datetime | None = None,
) -> BackfillRun:
    """Run batches of backfill ``name`` until it is finished or ``budget`` is spent (None: until it is
    finished). Each batch commits on its own, so stopping anywhere loses nothing. ``now`` stamps the
    progress row (None: the time of each batch)."""
    deadline = None if budget is None else time.monotonic() + budget.total_seconds()
    with transaction(database) as conn:
        if not backfill_sql.available(conn, name):
            return BackfillRun(name, 0, 0, finished=True)
    batches = rows = 0
    while True:
        with transaction(database) as conn:
            step = backfill_sql.step(conn, name, size=batch_size, now=now or datetime.now(UTC))
        batches += 1 if step.seen else 0
        rows += step.updated
        if step.finished or (deadline is not None and time.monotonic() >= deadline):
            return BackfillRun(name, batches, rows, step.finished)


def run_all(database: Database, *, budget: timedelta | None = BUDGET, now: datetime | None = None) -> list[BackfillRun]:
    """Every known backfill, in turn, sharing one budget: what the scheduled job runs."""
    deadline = None if budget is None else time.monotonic() + budget.total_seconds()
    runs = []
    for name in backfill_sql.BATCHES:
        left = None if deadline is None else timedelta(seconds=max(0.0, deadline - time.monotonic()))
        runs.append(run(database, name, budget=left, now=now))
    return runs
