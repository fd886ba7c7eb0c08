"""Schema migrations (yoyo-migrations over plain SQL files, each with a rollback) and type seeding.

The same entry points serve ``makima db migrate`` / ``rollback``, the local stack at start, the tests
and the deploy-time migration function on AWS.

Migrations run while the API serves writes (docs/operations.md, "Migrations run online"):

- A transactional migration (catalog changes under brief ``ACCESS EXCLUSIVE`` locks) runs with
  ``lock_timeout`` = ``LOCK_TIMEOUT``. A statement that must wait longer than that for its lock fails
  instead of waiting on, because while it waits every writer of that table queues behind it; the
  migration, rolled back whole, is then tried again (``ATTEMPTS``, with a growing pause).
- A non-transactional migration holds only statements whose locks writers never wait for (index builds
  and drops ``CONCURRENTLY``, storage parameters: ``SHARE UPDATE EXCLUSIVE``), so it may wait as long
  as it takes - for the transactions older than a ``CONCURRENTLY`` build, say - without the lock
  timeout that would fail it behind any transaction longer than 200 ms. Its statements are
  idempotent, and yoyo undoes those a failed one ran (each rollback statement pairs with the apply
  statement it undoes); it is retried the same way on a lock timeout or a deadlock.
- Before a non-transactional migration (or its retry) the INVALID indexes a failed
  ``CREATE INDEX CONCURRENTLY`` leaves behind are dropped, so ``IF NOT EXISTS`` cannot mistake one
  for a built index.
- A migration whose header names a backfill (``-- backfill: <name>``) runs only once that backfill
  (``makima.db.backfill``: batches of their own short transactions) has finished.

Migrate also sets the application's time limits on its role, in its database only
(``ALTER ROLE CURRENT_USER IN DATABASE <db> SET statement_timeout / idle_in_transaction_session_timeout``,
``RoleTimeouts``, from ``[database]``): every session the API opens afterwards starts with them, and an
operator sees them in ``pg_db_role_setting``. Migrate's own sessions lift both (startup options, which
win over role settings): an index build ``CONCURRENTLY`` or a backfill may take longer than any API
statement should, and yoyo sits in a transaction between its steps while a backfill runs on another
connection.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from makima.db import backfill
from makima.domain.contract_types import builtin_types

log = logging.getLogger("makima.migrate")

# How long a statement of a transactional migration may wait for a lock. Writers of the table queue
# behind a waiting ACCESS EXCLUSIVE request, and a transaction may take a lock on up to three busy
# tables in turn (0005), so this stays well under the one second a writer may wait
# (tests/integration/test_online_migrations.py).
LOCK_TIMEOUT = timedelta(milliseconds=200)
# Tries per migration when its lock is not to be had (or it lost a deadlock), pausing between them
# from RETRY_PAUSE, doubling up to MAX_RETRY_PAUSE (with jitter): about two minutes in all.
ATTEMPTS = 30
RETRY_PAUSE = 0.2
MAX_RETRY_PAUSE = 5.0
_RETRYABLE = (errors.LockNotAvailable, errors.DeadlockDetected)
_BACKFILL_DIRECTIVE = re.compile(r"^\s*--\s*backfill\s*:\s*(\S+)\s*$")


# What migrate's own sessions start with: the role's time limits lifted (see the module's docstring).
UNLIMITED = "-c statement_timeout=0 -c idle_in_transaction_session_timeout=0"


class _DatabaseLimits(Protocol):
    """``makima.config.DatabaseConfig``, as far as migrate reads it."""

    @property
    def statement_timeout_seconds(self) -> float: ...

    @property
    def idle_in_transaction_timeout_seconds(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RoleTimeouts:
    """The time limits set on the application's role in its database (0: none). The defaults are
    ``[database]``'s (makima.config.DatabaseConfig)."""

    statement_seconds: float = 20.0
    idle_in_transaction_seconds: float = 60.0

    @classmethod
    def of(cls, config: _DatabaseLimits) -> RoleTimeouts:
        return cls(config.statement_timeout_seconds, config.idle_in_transaction_timeout_seconds)

    def settings(self) -> dict[str, str]:
        """PostgreSQL setting -> value, in milliseconds (what ``SHOW`` and ``pg_db_role_setting`` read)."""
        return {
            "statement_timeout": f"{round(self.statement_seconds * 1000)}ms",
            "idle_in_transaction_session_timeout": f"{round(self.idle_in_transaction_seconds * 1000)}ms",
        }


def migrations_dir() -> str:
    return str(resources.files("makima") / "migrations")


def own_session(url: str) -> str:
    """A connection string for ``url`` whose session runs without the role's time limits."""
    params = conninfo_to_dict(url)
    params["options"] = f"{params['options']} {UNLIMITED}" if params.get("options") else UNLIMITED
    return make_conninfo("", **params)


def _yoyo_url(url: str, lock_timeout: timedelta | None = None) -> str:
    """yoyo's URL for ``url``: its connections (each migration runs on one of its own) start without
    the role's time limits and, with ``lock_timeout``, with that ``lock_timeout``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql"}:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    parts = urlsplit(f"postgresql+psycopg://{rest}")
    query = dict(parse_qsl(parts.query))
    setting = UNLIMITED
    if lock_timeout is not None:
        setting += f" -c lock_timeout={int(lock_timeout.total_seconds() * 1000)}"
    query["options"] = f"{query['options']} {setting}" if query.get("options") else setting
    return urlunsplit(parts._replace(query=urlencode(query)))


def _backend(url: str, lock_timeout: timedelta | None) -> Any:
    from yoyo import get_backend

    return get_backend(_yoyo_url(url, lock_timeout))


def _backend_and_migrations(url: str, lock_timeout: timedelta | None = LOCK_TIMEOUT) -> tuple[Any, Any]:
    from yoyo import read_migrations

    return _backend(url, lock_timeout), read_migrations(migrations_dir())


def migrate(
    url: str,
    *,
    lock_timeout: timedelta = LOCK_TIMEOUT,
    attempts: int = ATTEMPTS,
    role_timeouts: RoleTimeouts | None = None,
) -> list[str]:
    """Apply every pending migration, in order, each after the backfills it names have finished; then
    sync the built-in contract types and set ``role_timeouts`` (default: ``RoleTimeouts()``) on the
    role in this database. Returns what ran. A migration that still fails after ``attempts`` raises,
    leaving the schema as the last good migration left it."""
    backend, migrations = _backend_and_migrations(url, lock_timeout)
    patient = _backend(url, None)
    applied: list[str] = []
    with backend.lock():
        pending = backend.to_apply(migrations)
        for migration in pending:
            for name in backfills_before(migration):
                run_backfill(url, name)
            _with_retries(migration.id, attempts, lambda m=migration: _apply_one(backend, patient, m, url))
            applied.append(migration.id)
        backend.run_post_apply(pending)
    sync_builtin_types(url)
    ensure_heartbeat_partitions(url)
    set_role_timeouts(url, role_timeouts or RoleTimeouts())
    return applied


def set_role_timeouts(url: str, timeouts: RoleTimeouts) -> None:
    """``ALTER ROLE CURRENT_USER IN DATABASE <this one> SET ...`` for each limit: the role's sessions in
    this database start with them; elsewhere (another database on the server) it is untouched. A role
    may set its own; sessions already open keep what they had until they reconnect."""
    with psycopg.connect(own_session(url), autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        for name, value in timeouts.settings().items():
            conn.execute(
                sql.SQL("ALTER ROLE CURRENT_USER IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(str(row[0])), sql.Identifier(name), sql.Literal(value)
                )
            )


def rollback(
    url: str, steps: int = 1, *, lock_timeout: timedelta = LOCK_TIMEOUT, attempts: int = ATTEMPTS
) -> list[str]:
    """Roll back the last ``steps`` applied migrations (newest first). Returns what was undone."""
    backend, migrations = _backend_and_migrations(url, lock_timeout)
    patient = _backend(url, None)
    with backend.lock():
        chosen = list(backend.to_rollback(migrations))[:steps]
        for migration in chosen:
            _with_retries(migration.id, attempts, lambda m=migration: _runner(backend, patient, m).rollback_one(m))
    return [m.id for m in chosen]


def backfills_before(migration: Any) -> list[str]:
    """The backfills named by ``-- backfill: <name>`` lines in the header comment of ``migration``."""
    migration.load()
    names = []
    for line in str(migration.source).splitlines():
        if line.strip() and not line.lstrip().startswith("--"):
            break  # the header ends at the first statement
        match = _BACKFILL_DIRECTIVE.match(line)
        if match:
            names.append(match[1])
    return names


def run_backfill(url: str, name: str) -> int:
    """Run backfill ``name`` to its end, one short transaction per batch (resuming where any earlier
    run stopped). Returns the rows written."""
    written = batches = 0
    started = time.monotonic()
    with psycopg.connect(own_session(url), row_factory=dict_row, autocommit=True) as conn:
        while True:
            with conn.transaction():
                step = backfill.step(conn, name, size=backfill.BATCH, now=datetime.now(UTC))
            written += step.updated
            batches += 1
            if step.finished:
                break
            if batches % 100 == 0:
                log.info("backfill %s: %d rows written in %d batches so far", name, written, batches)
    log.info("backfill %s finished: %d rows written in %.1f s", name, written, time.monotonic() - started)
    return written


def _runner(backend: Any, patient: Any, migration: Any) -> Any:
    """The backend to run ``migration`` on: with the lock timeout if it is transactional, ``patient``
    (no timeout of ours) if not."""
    migration.load()
    return backend if migration.use_transactions else patient


def _apply_one(backend: Any, patient: Any, migration: Any, url: str) -> None:
    runner = _runner(backend, patient, migration)
    if runner is patient:
        drop_invalid_indexes(url)
    runner.apply_one(migration)


def _with_retries(what: str, attempts: int, action: Any) -> None:
    """Run ``action``; when it could not get a lock in time (or lost a deadlock), pause and run it
    again, up to ``attempts`` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except _RETRYABLE as exc:
            if attempt >= attempts:
                raise
            pause = min(MAX_RETRY_PAUSE, RETRY_PAUSE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)  # noqa: S311
            log.warning(
                "%s: %s (attempt %d of %d); retrying in %.1f s",
                what,
                str(exc).splitlines()[0],
                attempt,
                attempts,
                pause,
            )
            time.sleep(pause)


def drop_invalid_indexes(url: str) -> list[str]:
    """Drop (CONCURRENTLY) the INVALID indexes of the schema's tables: what a failed or interrupted
    ``CREATE INDEX CONCURRENTLY`` leaves. Only called under yoyo's lock, when no migration is building
    one. Returns their names."""
    with psycopg.connect(own_session(url), autocommit=True) as conn:
        names = [
            (str(r[0]), str(r[1]))
            for r in conn.execute(
                """SELECT n.nspname, ic.relname
                     FROM pg_index i
                     JOIN pg_class ic ON ic.oid = i.indexrelid
                     JOIN pg_namespace n ON n.oid = ic.relnamespace
                     JOIN pg_class t ON t.oid = i.indrelid
                    WHERE NOT i.indisvalid AND t.relkind = 'r' AND n.nspname = current_schema()"""
            ).fetchall()
        ]
        for schema, name in names:
            log.warning("dropping the invalid index %s left by a failed build", name)
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
    return [name for _, name in names]


def chain() -> list[str]:
    """The ids of the shipped migrations in the order yoyo applies them (their ``-- depends:`` order).
    Each release ships the chain of the one before with migrations added at its end, so an older
    release's migrations are a prefix of this list. Reads the files only (no database)."""
    from yoyo import read_migrations
    from yoyo.migrations import topological_sort

    migrations = read_migrations(migrations_dir())
    for migration in migrations:
        migration.load()
    return [m.id for m in topological_sort(migrations)]


def applied_migrations(url: str) -> list[str]:
    backend, migrations = _backend_and_migrations(url)
    return [m.id for m in migrations if backend.is_applied(m)]


def sync_builtin_types(url: str) -> None:
    """Upsert the packaged contract types; a newer file version replaces the stored definition."""
    with psycopg.connect(own_session(url)) as conn:
        tables = conn.execute("SELECT to_regclass('contract_types') IS NOT NULL").fetchone()
        if not tables or not tables[0]:
            return
        for t in builtin_types():
            conn.execute(
                """
                INSERT INTO contract_types (name, description, version, definition, builtin)
                VALUES (%s, %s, %s, %s, true)
                ON CONFLICT (name) DO UPDATE
                   SET description = EXCLUDED.description, version = EXCLUDED.version,
                       definition = EXCLUDED.definition, builtin = true, updated_at = now()
                 WHERE contract_types.version < EXCLUDED.version OR NOT contract_types.builtin
                       OR contract_types.definition <> EXCLUDED.definition
                """,
                (t.name, t.description, t.version, Jsonb(t.model_dump(mode="json"))),
            )


def ensure_heartbeat_partitions(url: str) -> None:
    """Create the heartbeat history's current and next hourly partitions, so a fresh deployment ingests
    into real partitions before the retention schedule first runs."""
    from makima.db.heartbeats import ensure_partitions

    with psycopg.connect(own_session(url), row_factory=dict_row) as conn:
        present = conn.execute("SELECT to_regclass('supervisor_heartbeats') IS NOT NULL AS present").fetchone()
        if present and present["present"]:
            ensure_partitions(conn, now=datetime.now(UTC))
