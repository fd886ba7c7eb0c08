"""When each API token was last used (``api_tokens.last_used_at``), recorded without slowing requests.

A token's use is written at most once a minute (``INTERVAL``), enforced twice:

- in the database, by the statement itself (``db/users.py: touch_token``): it writes only when the stored
  value is NULL or a minute old, and skips a row another transaction holds locked instead of waiting,
  so any number of processes may record the same token and at most one write a minute lands;
- in each process, by ``UsageRecorder``'s memo: after a token's use is recorded, its next minute of
  requests issue no statement at all (a dictionary look-up on the request's path, nothing more).

Where it runs: locally (and in any process serving the FastAPI app) ``api/deps.py: get_principal`` asks
``due`` and, when a write is due, hands ``record`` to the response's background tasks, so it runs after
the response has been sent. On AWS the authorizer runs once per API Gateway cache miss (per token, every
``ReauthorizeEvery`` = 60 s): its token lookup is ``resolve_and_touch``, the same look-up with the
conditional write folded into one statement, so recording costs no extra round trip.

The time written is this process's clock (``now``; a seam the tests replace), the one the memo uses, so
"a minute later" is testable without waiting a minute.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from makima.db import users as users_sql
from makima.db.connection import Database
from makima.domain.principals import Principal
from makima.services import auth

log = logging.getLogger(__name__)

INTERVAL = timedelta(minutes=1)
# The memo holds one timestamp per token seen within the interval; past this many it is cleared of
# entries older than the interval (a process serving more live tokens than this is far from here).
MEMO_LIMIT = 10_000
# How long a scheduled write may take to report back before another request schedules it again: a
# background task is dropped when its request ends in an error (Starlette runs none then), and must not
# silence the token's next minute.
PENDING = timedelta(seconds=5)


def now() -> datetime:
    return datetime.now(UTC)


class UsageRecorder:
    """One per process: which tokens' use was recorded within the last ``interval``, and recording it.

    Thread-safe (requests resolve tokens in the threadpool). ``due`` reserves the write, so of many
    concurrent first requests only one schedules it; ``record`` settles the reservation for the interval
    when the database has the use, and releases it when the write failed or skipped a locked row (the
    next request tries again). A reservation never settled (its task was dropped) lapses after
    ``PENDING``."""

    def __init__(
        self, clock: Callable[[], datetime] | None = None, interval: timedelta = INTERVAL, limit: int = MEMO_LIMIT
    ) -> None:
        self._clock = clock or (lambda: now())
        self._interval = interval
        self._limit = limit
        self._recorded: dict[UUID, tuple[datetime, bool]] = {}  # token -> (reserved at, settled)
        self._lock = threading.Lock()
        self._statements: Counter[UUID] = Counter()

    def due(self, token_id: UUID) -> datetime | None:
        """The time to record for ``token_id`` when a write is due now (reserved), else None."""
        at = self._clock()
        with self._lock:
            entry = self._recorded.get(token_id)
            if entry is not None and at - entry[0] < (self._interval if entry[1] else PENDING):
                return None
            if len(self._recorded) >= self._limit:
                self._recorded = {k: v for k, v in self._recorded.items() if at - v[0] < self._interval}
            self._recorded[token_id] = (at, False)
            return at

    def record(self, db: Database, token_id: UUID, at: datetime) -> bool:
        """Write the use; True when written, False when not (another process wrote it less than a minute
        ago: the memo keeps it). Never raises: a failure, or a row locked by another transaction, is
        logged, released and retried on the token's next request; its own request was answered already."""
        with self._lock:
            self._statements[token_id] += 1
        try:
            with db.connection() as conn:
                written = users_sql.touch_token(conn, token_id, at)
        except Exception:
            log.warning("token use not recorded; retried on its next request", exc_info=True)
            written = None
        with self._lock:
            if self._recorded.get(token_id) == (at, False):  # this reservation, not a later one
                if written is None:  # failed, or the row was locked: the next request tries again
                    del self._recorded[token_id]
                else:  # the database has a use within the interval: nothing to do until it ends
                    self._recorded[token_id] = (at, True)
        return bool(written)

    def statements_for(self, token_id: UUID | None) -> int:
        """How many writes this recorder sent for ``token_id`` (for tests and benchmarks)."""
        return self._statements[token_id] if token_id is not None else 0


def resolve_and_touch(db: Database, token: str | None) -> Principal:
    """``auth.resolve`` with the token's use recorded in the same statement (at most once a minute,
    never waiting for a lock): for the authorizer, which already makes this one round trip per
    cache miss."""
    from makima.errors import Unauthorized

    if not token:
        raise Unauthorized("missing bearer token: send Authorization: Bearer <token>")
    with db.connection() as conn:
        row = users_sql.resolve_and_touch_token(conn, auth.hash_token(token), now())
    if row is None:
        raise Unauthorized("invalid or revoked token")
    return auth.principal_from_row(row)
