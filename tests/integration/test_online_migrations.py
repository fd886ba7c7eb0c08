"""Migrations run online: the chain after 0001, and the activity backfill, applied through
``makima.db.migrate`` while writers keep inserting and updating the tables they change; a migration
that cannot get its lock gives up fast and retries; one that fails at any statement leaves the schema
of the last good migration; the backfill runs in resumable, idempotent batches, from migrate and from
its scheduled function.

The writers are the code that runs during a deployment: the previous release's statements, which know
only the 0001 columns. Each statement runs in its own transaction and its latency is recorded: a
migration step that holds a strong lock for long, or queues writers behind a lock it waits for, shows
up as a writer statement that waited.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row
from yoyo import get_backend, read_migrations
from yoyo.migrations import read_sql_migration

from makima.config import get_settings
from makima.db import backfill as backfill_sql
from makima.db import migrate as migrate_module
from makima.db.connection import SingleConnectionDatabase, transaction
from makima.db.migrate import _yoyo_url, applied_migrations, migrate, migrations_dir

# Imported before any handler runs: the Powertools logger keeps the stdout of the moment it is created.
from makima.lambda_support import observability, runtime  # noqa: F401
from makima.services import backfill
from tests.integration.test_lambda_handlers import FakeContext, handler_of, load_event

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

CONTRACTS = 50_000
EVENTS_PER_CONTRACT = 2
# No writer statement may wait longer than this for the migrations (the bound).
MAX_WAIT = 1.0

Connection = psycopg.Connection[tuple[Any, ...]]


def migrated_to(url: str, last: str) -> None:
    """Apply the migrations up to and including ``last`` the way yoyo alone would: no backfill, no
    lock_timeout, no retries (the state a release left the database in)."""
    backend = get_backend(_yoyo_url(url))
    chain = [m.id for m in read_migrations(migrations_dir())]
    wanted = set(chain[: chain.index(last) + 1])
    backend.apply_migrations(backend.to_apply(read_migrations(migrations_dir()).filter(lambda m: m.id in wanted)))


def old_contracts(url: str, count: int) -> None:
    """``count`` contracts written before 0002 (their activity columns NULL), last touched in the past."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO contract_types (name, definition) VALUES ('simple', '{}'::jsonb) ON CONFLICT DO NOTHING"
        )
        conn.execute("INSERT INTO users (name, role) VALUES ('old' || gen_random_uuid(), 'user')")
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'contracts'"
            ).fetchall()
        }
        # After 0002 the columns exist: a row as 0001's code wrote it has them NULL.
        nulls = ", last_activity_at = NULL, status_changed_at = NULL" if "last_activity_at" in columns else ""
        conn.execute(
            """
            INSERT INTO contracts (owner_id, name, contract_type, phase, status, created_at, updated_at)
            SELECT (SELECT id FROM users ORDER BY name LIMIT 1), 'c' || g, 'simple', 'plan',
                   (ARRAY['active', 'completed', 'archived'])[1 + g %% 3],
                   now() - make_interval(days => 1 + g %% 365), now() - make_interval(hours => 1 + g %% 5000)
              FROM generate_series(1, %s) AS g
            """,
            (count,),
        )
        if nulls:
            conn.execute(f"UPDATE contracts SET version = version{nulls}")


def load(url: str) -> list[str]:
    """A database as 0001 left it, holding a realistic history: 50,000 contracts last touched over the
    past months, a task each and their event log. Returns a sample of contract ids for the writers."""
    old_contracts(url, CONTRACTS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO tasks (contract_id, name, status, created_by)
            SELECT id, 't', (ARRAY['pending', 'running', 'completed', 'failed'])[1 + abs(hashtext(name)) % 4], 'u'
              FROM contracts
            """
        )
        conn.execute(
            """
            INSERT INTO contract_events (contract_id, owner_id, type, actor, published_at)
            SELECT c.id, c.owner_id, (ARRAY['created', 'status_changed', 'phase_changed'])[g], 'u', now()
              FROM contracts AS c CROSS JOIN generate_series(1, %s) AS g
            """,
            (EVENTS_PER_CONTRACT,),
        )
        conn.execute("ANALYZE")
        return [str(r[0]) for r in conn.execute("SELECT id FROM contracts ORDER BY random() LIMIT 2000")]


@dataclass
class Writer:
    """One connection writing in a loop until stopped, recording when each statement started and how
    long it took. Commits do not wait for the WAL flush (synchronous_commit off): what is measured is
    waiting for locks, not this shared machine's disk."""

    name: str
    url: str
    statement: Callable[[Connection, random.Random], None]
    stop: threading.Event
    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        rng = random.Random(self.name)
        try:
            options = "-c statement_timeout=30s -c synchronous_commit=off"
            with psycopg.connect(self.url, autocommit=True, options=options) as conn:
                while not self.stop.is_set():
                    started = time.monotonic()
                    self.statement(conn, rng)
                    self.samples.append((started, time.monotonic() - started))
                    time.sleep(0.002)
        except BaseException as exc:
            self.errors.append(exc)

    def slowest(self) -> float:
        return max(took for _, took in self.samples)


def writers_for(url: str, ids: list[str], stop: threading.Event) -> list[Writer]:
    """The previous release's writes: new contracts, updated contracts, events, tasks."""

    def insert_contract(conn: Connection, rng: random.Random) -> None:
        conn.execute(
            """INSERT INTO contracts (owner_id, name, contract_type, phase)
               SELECT owner_id, 'w', 'simple', 'plan' FROM contracts WHERE id = %s""",
            (rng.choice(ids),),
        )

    def update_contract(conn: Connection, rng: random.Random) -> None:
        conn.execute("UPDATE contracts SET version = version + 1, updated_at = now() WHERE id = %s", (rng.choice(ids),))

    def insert_event(conn: Connection, rng: random.Random) -> None:
        conn.execute(
            "INSERT INTO contract_events (contract_id, type, actor) VALUES (%s, 'status_changed', 'w')",
            (rng.choice(ids),),
        )

    def insert_task(conn: Connection, rng: random.Random) -> None:
        conn.execute("INSERT INTO tasks (contract_id, name, created_by) VALUES (%s, 'w', 'w')", (rng.choice(ids),))

    return [Writer(fn.__name__, url, fn, stop) for fn in (insert_contract, update_contract, insert_event, insert_task)]


@dataclass
class Writing:
    writers: list[Writer]
    stop: threading.Event


@pytest.fixture
def writing() -> Iterator[Callable[[str, list[str]], Writing]]:
    """``writing(url, ids)``: the writers, started; stopped and joined when the test ends."""
    started: list[tuple[threading.Event, list[threading.Thread]]] = []

    def start(url: str, ids: list[str]) -> Writing:
        stop = threading.Event()
        writers = writers_for(url, ids, stop)
        threads = [threading.Thread(target=w.run, name=w.name, daemon=True) for w in writers]
        for t in threads:
            t.start()
        started.append((stop, threads))
        return Writing(writers, stop)

    yield start
    for stop, threads in started:
        stop.set()
        for t in threads:
            t.join(timeout=60)


def test_migrations_and_backfill_never_make_a_writer_wait(
    fresh_database: Callable[[str], str], writing: Callable[[str, list[str]], Writing]
) -> None:
    # Given a database at 0001 holding a realistic amount of data
    url = fresh_database("makima_online")
    migrated_to(url, "0001_initial")
    ids = load(url)

    # And writers of the running release hammering contracts, tasks and events
    running = writing(url, ids)
    time.sleep(0.5)

    # When every remaining migration is applied (the backfill included), and the backfill job run
    started = time.monotonic()
    applied = migrate(url)
    database = SingleConnectionDatabase(url)
    try:
        job = backfill.run(database, budget=None)
    finally:
        database.close()
    finished = time.monotonic()
    time.sleep(0.5)
    running.stop.set()
    time.sleep(0.1)

    assert applied[0] == "0002_enhanced_contract_status"
    for w in running.writers:
        assert not w.errors, f"{w.name}: {w.errors!r}"
    # Then no writer statement waited a second (before the fix: 4.6 s, and a task insert killed by a deadlock)
    slowest = {w.name: round(w.slowest(), 3) for w in running.writers}
    assert max(slowest.values()) < MAX_WAIT, f"slowest statements (s): {slowest}; migrating: {finished - started:.1f} s"
    for w in running.writers:
        # ... and every writer kept making progress throughout: no second without a finished statement
        ends = [at + took for at, took in w.samples if started <= at + took <= finished]
        assert len(ends) >= 10, f"{w.name}: {len(ends)} statements while migrating"
        gap = max(b - a for a, b in itertools.pairwise([started, *ends, finished]))
        assert gap < MAX_WAIT, f"{w.name} finished nothing for {gap:.2f} s"

    # And migrate ran the backfill over every old contract before the NOT NULL; the job had nothing left
    with psycopg.connect(url, row_factory=dict_row) as dict_conn:
        progress = backfill_sql.progress(dict_conn, backfill_sql.CONTRACT_ACTIVITY)
    assert progress is not None
    # (and those the writers inserted before 0002 gave them defaults)
    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT count(*) FROM contracts").fetchone()
    assert total is not None
    assert CONTRACTS <= progress["rows_updated"] < total[0]
    assert progress["finished_at"] is not None
    assert (job.finished, job.rows_updated) == (True, 0)
    with psycopg.connect(url) as conn:
        # And every contract has its activity, from updated_at where nothing newer is known
        nulls = conn.execute(
            "SELECT count(*) FROM contracts WHERE last_activity_at IS NULL OR status_changed_at IS NULL"
        ).fetchone()
        assert nulls == (0,)
        untouched = conn.execute(
            """SELECT count(*), count(*) FILTER (WHERE last_activity_at = updated_at AND status_changed_at = updated_at)
                 FROM contracts WHERE version = 1 AND name <> 'w'"""
        ).fetchone()
        assert untouched is not None
        assert untouched[0] > CONTRACTS // 2
        assert untouched[0] == untouched[1]
        # And the columns are NOT NULL, with no temporary check left
        not_null = conn.execute(
            """SELECT attname, attnotnull FROM pg_attribute
                WHERE attrelid = 'contracts'::regclass AND attname IN ('last_activity_at', 'status_changed_at')
                ORDER BY attname"""
        ).fetchall()
        assert not_null == [("last_activity_at", True), ("status_changed_at", True)]
        checks = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'contracts'::regclass AND conname LIKE '%not_null'"
        ).fetchall()
        assert checks == []
        # And every index is valid and ready, every constraint validated
        invalid = conn.execute(
            """SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                WHERE c.relnamespace = 'public'::regnamespace AND NOT (i.indisvalid AND i.indisready)"""
        ).fetchall()
        assert invalid == []
        unvalidated = conn.execute(
            "SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND NOT convalidated"
        ).fetchall()
        assert unvalidated == []
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        assert {
            "idx_contracts_status",
            "idx_contracts_owner_status",
            "idx_contracts_last_activity",
            "idx_contracts_stale",
            "idx_tasks_contract_phase",
            "idx_questions_pending",
            "idx_contracts_live_created",
            "idx_contracts_owner_live_created",
            "idx_tasks_daemon",
            "idx_contract_events_type",
        } <= indexes


# What a migration may do while writers run (docs/operations.md, "Migrations run online"). A
# non-transactional migration: only statements whose lock (SHARE UPDATE EXCLUSIVE) writers never wait
# for, since it runs without a lock timeout.
_ONLINE_STATEMENT = re.compile(
    r"^(CREATE (UNIQUE )?INDEX CONCURRENTLY|DROP INDEX CONCURRENTLY|ALTER TABLE \w+ (SET|RESET) \(|"
    r"ALTER TABLE \w+ VALIDATE CONSTRAINT)",
    re.IGNORECASE,
)


def _sql(statement: str) -> str:
    """The statement without its comments, on one line."""
    lines = (line.split("--")[0] for line in statement.splitlines())
    return " ".join(" ".join(lines).split())


def test_every_migration_takes_only_brief_locks() -> None:
    # Given every migration after 0001 (which creates its tables in an empty database)
    problems = []
    for migration in read_migrations(migrations_dir()):
        if migration.id == "0001_initial":
            continue
        directives, _, statements = read_sql_migration(migration.path)
        sql = [_sql(s) for s in statements]
        created = {m[2].lower() for s in sql if (m := re.match(r"CREATE TABLE (IF NOT EXISTS )?(\w+)", s, re.I))}
        if directives.get("transactional", "true") == "false":
            # Then a non-transactional one only builds or drops indexes CONCURRENTLY, sets storage
            # parameters or validates constraints ...
            problems += [f"{migration.id}: {s[:60]}" for s in sql if not _ONLINE_STATEMENT.match(s)]
            continue
        for s in sql:
            index = re.match(r"CREATE (UNIQUE )?INDEX .*? ON (\w+)", s, re.I)
            # ... and a transactional one builds indexes only on the tables it creates, writes no rows
            # (backfills do, in batches), adds CHECKs NOT VALID, and sets NOT NULL only once a check
            # proving it was validated in the same transaction (no scan under the exclusive lock)
            if index and index[2].lower() not in created:
                problems.append(f"{migration.id}: index on an existing table without CONCURRENTLY: {s[:60]}")
            if re.match(r"(UPDATE|DELETE|INSERT)\b", s, re.I):
                problems.append(f"{migration.id}: writes rows in the migration: {s[:60]}")
            if re.match(r"ALTER TABLE", s, re.I) and " CHECK " in s.upper() and "NOT VALID" not in s.upper():
                problems.append(f"{migration.id}: CHECK added without NOT VALID: {s[:60]}")
            validated = re.findall(r"VALIDATE CONSTRAINT (\w+)", " ".join(sql), re.I)
            for column in re.findall(r"ALTER COLUMN (\w+) SET NOT NULL", s, re.I):
                if not any(column in name for name in validated):
                    problems.append(f"{migration.id}: SET NOT NULL without a validated check: {column}")
    assert problems == [], "\n".join(problems)


class Blocker:
    """A transaction that reads contracts and stays open: holds a lock every ALTER TABLE waits for."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("SELECT count(*) FROM contracts")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def test_a_migration_that_cannot_get_its_lock_gives_up_fast_and_retries(
    fresh_database: Callable[[str], str],
    writing: Callable[[str, list[str]], Writing],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a database at 0001, writers, and a long transaction holding a lock on contracts for 2.5 s
    url = fresh_database("makima_lockout")
    migrated_to(url, "0001_initial")
    old_contracts(url, 200)
    with psycopg.connect(url) as conn:
        ids = [str(r[0]) for r in conn.execute("SELECT id FROM contracts")]
    running = writing(url, ids)
    blocker = Blocker(url)
    timer = threading.Timer(2.5, blocker.release)
    timer.start()

    # When the migrations run
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="makima.migrate"):
            applied = migrate(url)
    finally:
        timer.join()
    took = time.monotonic() - started
    running.stop.set()
    time.sleep(0.1)

    # Then 0002 gave up on its lock after the lock_timeout, again and again, instead of queueing the
    # writers behind it for 2.5 s; it went in once the transaction ended, and the rest followed
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("0002_enhanced_contract_status:")]
    assert retries, "0002 never had to retry: the test proves nothing"
    assert all("lock timeout" in message for message in retries)
    assert took >= 2.5
    assert applied == [m.id for m in read_migrations(migrations_dir())][1:]
    slowest = {w.name: round(w.slowest(), 3) for w in running.writers}
    assert max(slowest.values()) < MAX_WAIT, slowest
    for w in running.writers:
        assert not w.errors, f"{w.name}: {w.errors!r}"


def test_a_migration_still_locked_out_fails_and_leaves_the_last_good_schema(
    fresh_database: Callable[[str], str],
) -> None:
    # Given a database at 0001 and a transaction that does not end
    url = fresh_database("makima_lockout")
    migrated_to(url, "0001_initial")
    old_contracts(url, 10)
    blocker = Blocker(url)
    try:
        # When the migrations run, with two attempts each
        with pytest.raises(errors.LockNotAvailable):
            migrate(url, attempts=2)
    finally:
        blocker.release()

    # Then nothing after 0001 is applied or half-applied, and yoyo's lock is free for the next try
    assert applied_migrations(url) == ["0001_initial"]
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            """SELECT count(*) FROM information_schema.columns
                WHERE table_name = 'contracts' AND column_name = 'waiting_for'"""
        ).fetchone()
        assert columns == (0,)
        assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)


def test_an_index_a_failed_concurrent_build_left_invalid_is_built_again(
    fresh_database: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an INVALID idx_contracts_status, as a CREATE INDEX CONCURRENTLY that failed leaves it (here
    # a unique build over duplicate statuses)
    url = fresh_database("makima_invalid")
    migrated_to(url, "0001_initial")
    old_contracts(url, 10)
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_contracts_status ON contracts (status)")
        assert conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_contracts_status'::regclass"
        ).fetchone() == (False,)

    # When the migrations run (0002d creates idx_contracts_status IF NOT EXISTS)
    with caplog.at_level(logging.WARNING, logger="makima.migrate"):
        migrate(url)

    # Then the invalid one was dropped and the index built: valid, and the one 0002d defines
    assert any("idx_contracts_status" in r.getMessage() for r in caplog.records)
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = 'idx_contracts_status'::regclass"
        ).fetchone() == (True, False)


_SCHEMA = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' '
       || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE '%yoyo%'
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
       || ' validated=' || convalidated
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text NOT LIKE '%yoyo%'
UNION ALL
SELECT 'options ' || relname || ' ' || coalesce(array_to_string(reloptions, ','), '')
  FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND relname NOT LIKE '%yoyo%'
UNION ALL
SELECT 'invalid ' || indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid
"""


def schema(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(r[0]) for r in conn.execute(_SCHEMA).fetchall()}


def _header(text: str) -> str:
    """The leading comment block of a migration file: its description and directives."""
    lines = itertools.takewhile(lambda line: not line.strip() or line.lstrip().startswith("--"), text.splitlines())
    return "\n".join(lines)


def test_a_migration_failing_at_any_statement_leaves_the_schema_of_the_last_good_one(
    fresh_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the migrations shipped one at a time, over a database with a few old contracts
    # (yoyo undoes the statements a failed non-transactional migration ran with the rollback statements
    # paired with them: the rollback file lists their undoing one for one, in reverse order)
    url = fresh_database("makima_undo")
    source = Path(migrations_dir())
    chain = [m.id for m in read_migrations(str(source))]
    shipped = tmp_path / "migrations"
    shipped.mkdir()
    monkeypatch.setattr(migrate_module, "migrations_dir", lambda: str(shipped))
    checked = 0
    for migration in chain:
        for suffix in (".sql", ".rollback.sql"):
            shutil.copy(source / f"{migration}{suffix}", shipped / f"{migration}{suffix}")
        path = shipped / f"{migration}.sql"
        original = path.read_text(encoding="utf-8")
        directives, _, statements = read_sql_migration(str(path))
        transactional = directives.get("transactional", "true") == "true"
        before = schema(url)
        # When a non-transactional migration fails at any of its statements (a transactional one rolls
        # back whole: tests/integration/test_migration_resource.py)
        for k in [] if transactional else range(len(statements)):
            broken = [*statements[:k], "SELECT 1 / 0;", *statements[k + 1 :]]
            path.write_text(_header(original) + "\n\n" + "\n\n".join(broken) + "\n", encoding="utf-8")
            with pytest.raises(errors.DivisionByZero):
                migrate(url, attempts=1)
            # Then the schema is the one the last good migration left, and the migration is not applied
            assert schema(url) == before, f"{migration} failing at statement {k + 1} left changes behind"
            assert migration not in applied_migrations(url)
            checked += 1
        path.write_text(original, encoding="utf-8")
        assert migrate(url) == [migration]
        if migration == "0001_initial":
            old_contracts(url, 20)
    assert checked >= 10


def test_the_backfill_runs_in_resumable_idempotent_batches(fresh_database: Callable[[str], str]) -> None:
    # Given a database as 0002 left it: 2,500 contracts of the previous release (activity NULL), and one
    # whose activity the new release has already set (the last in key order)
    url = fresh_database("makima_backfill_job")
    migrated_to(url, "0002_enhanced_contract_status")
    old_contracts(url, 2_500)
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO contracts (id, owner_id, name, contract_type, phase, last_activity_at, status_changed_at)
               SELECT 'ffffffff-ffff-4fff-bfff-ffffffffffff', owner_id, 'new', 'simple', 'plan', '2020-01-01Z',
                      '2020-01-02Z'
                 FROM contracts LIMIT 1"""
        )
    database = SingleConnectionDatabase(url)
    first, second = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    try:
        # When the job runs with no time to spare: one batch, committed
        run = backfill.run(database, batch_size=1_000, budget=timedelta(0), now=first)

        # Then it wrote 1,000 rows and knows where it stopped
        assert (run.batches, run.rows_updated, run.finished) == (1, 1_000, False)
        with transaction(database) as conn:
            progress = backfill_sql.progress(conn, backfill_sql.CONTRACT_ACTIVITY)
            nulls = conn.execute("SELECT count(*) AS n FROM contracts WHERE last_activity_at IS NULL").fetchone()
        assert progress is not None
        assert (progress["rows_updated"], progress["batches"], progress["finished_at"]) == (1_000, 1, None)
        assert progress["started_at"] == progress["updated_at"] == first
        assert nulls == {"n": 1_500}

        # When it runs again, to the end: it resumes after the last batch, never redoes one
        run = backfill.run(database, batch_size=1_000, budget=None, now=second)
        assert (run.batches, run.rows_updated, run.finished) == (2, 1_500, True)
        with transaction(database) as conn:
            progress = backfill_sql.progress(conn, backfill_sql.CONTRACT_ACTIVITY)
            rows = conn.execute(
                """SELECT count(*) FILTER (WHERE last_activity_at = updated_at
                                             AND status_changed_at = updated_at) AS filled,
                          count(*) FILTER (WHERE last_activity_at IS NULL OR status_changed_at IS NULL) AS missing
                     FROM contracts WHERE name <> 'new'"""
            ).fetchone()
            new = conn.execute(
                "SELECT last_activity_at, status_changed_at FROM contracts WHERE name = 'new'"
            ).fetchone()
        assert progress is not None
        assert (progress["rows_updated"], progress["finished_at"]) == (2_500, second)
        # Then every old contract has its activity from updated_at; the value set meanwhile is kept
        assert rows == {"filled": 2_500, "missing": 0}
        assert new == {
            "last_activity_at": datetime(2020, 1, 1, tzinfo=UTC),
            "status_changed_at": datetime(2020, 1, 2, tzinfo=UTC),
        }

        # When it runs once more: nothing to do, nothing written
        assert backfill.run(database, now=second + timedelta(hours=1)) == backfill.BackfillRun(
            "contract_activity", 0, 0, True
        )
        with transaction(database) as conn:
            assert backfill_sql.progress(conn, backfill_sql.CONTRACT_ACTIVITY) == progress
    finally:
        database.close()


def test_concurrent_backfill_runs_share_the_work(fresh_database: Callable[[str], str]) -> None:
    # Given 5,000 old contracts, and two runners at once (a migrate and the scheduled job)
    url = fresh_database("makima_backfill_race")
    migrated_to(url, "0002_enhanced_contract_status")
    old_contracts(url, 5_000)
    runs: list[backfill.BackfillRun] = []

    def runner() -> None:
        database = SingleConnectionDatabase(url)
        try:
            runs.append(backfill.run(database, batch_size=500, budget=None))
        finally:
            database.close()

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    # Then both finish, between them writing every row once and walking each batch once
    assert [r.finished for r in runs] == [True, True]
    assert sum(r.rows_updated for r in runs) == 5_000
    assert sum(r.batches for r in runs) == 10
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM contracts WHERE last_activity_at IS NULL").fetchone() == (0,)


def test_the_scheduled_function_continues_an_unfinished_backfill(
    fresh_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database whose backfill a migrate left unfinished, and the backfill function's environment
    url = fresh_database("makima_backfill_fn")
    migrated_to(url, "0002_enhanced_contract_status")
    old_contracts(url, 1_500)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    monkeypatch.delenv("DB_HOST", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setattr(backfill, "BUDGET", timedelta(0))  # one batch per run
    runtime.reset()
    get_settings.cache_clear()
    event = load_event("schedule/backfill")
    try:
        # When the schedule invokes it three times
        first = handler_of("backfill")(event, FakeContext())
        second = handler_of("backfill")(event, FakeContext())
        third = handler_of("backfill")(event, FakeContext())
    finally:
        runtime.reset()
        get_settings.cache_clear()

    # Then each run goes on where the last stopped, until the backfill is finished
    assert first["job"] == "backfill"
    assert (first["rows_updated"], first["unfinished"]) == (1_000, ["contract_activity"])
    assert (second["rows_updated"], second["unfinished"]) == (500, [])
    assert (third["rows_updated"], third["unfinished"]) == (0, [])
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM contracts WHERE last_activity_at IS NULL").fetchone() == (0,)


def test_links_across_tenants_made_before_the_api_refused_them_are_undone(
    fresh_database: Callable[[str], str],
) -> None:
    """The cross_tenant_links backfill: a worktree reported against another owner's task, and a
    supervisor task put on another owner's daemon (both allowed before issue 12), are unlinked; links
    within one owner stay; a second run writes nothing."""
    url = fresh_database("makima_unlink_tenants")
    migrate(url)
    with psycopg.connect(url) as conn:
        # Given two owners, each with a daemon and a contract with a supervisor task
        ids: dict[str, Any] = {}
        for who in ("alice", "bob"):
            uid = conn.execute("INSERT INTO users (name, role) VALUES (%s, 'user') RETURNING id", (who,)).fetchone()
            assert uid is not None
            did = conn.execute(
                "INSERT INTO daemons (owner_id, name) VALUES (%s, 'host') RETURNING id", (uid[0],)
            ).fetchone()
            cid = conn.execute(
                """INSERT INTO contracts (owner_id, name, contract_type, phase)
                   VALUES (%s, %s, 'simple', 'plan') RETURNING id""",
                (uid[0], f"{who}-contract"),
            ).fetchone()
            assert did is not None
            assert cid is not None
            ids[who] = (did[0], cid[0])
        (alice_daemon, alice_contract), (bob_daemon, bob_contract) = ids["alice"], ids["bob"]

        def task(contract: Any, daemon: Any, supervisor: bool) -> Any:
            row = conn.execute(
                """INSERT INTO tasks (contract_id, name, is_supervisor, created_by, daemon_id)
                   VALUES (%s, 't', %s, 'test', %s) RETURNING id""",
                (contract, supervisor, daemon),
            ).fetchone()
            assert row is not None
            return row[0]

        # alice's supervisor was put on bob's daemon (crossed), bob's on his own (kept)
        crossed, kept = task(alice_contract, bob_daemon, True), task(bob_contract, bob_daemon, True)
        for tid, contract in ((crossed, alice_contract), (kept, bob_contract)):
            conn.execute(
                "INSERT INTO supervisor_states (task_id, contract_id, daemon_id, phase) VALUES (%s, %s, %s, 'plan')",
                (tid, contract, bob_daemon),
            )
        # bob's daemon reported a worktree against alice's task, and one against his own
        for path, tid, contract in (("/w/alice", crossed, alice_contract), ("/w/bob", kept, bob_contract)):
            conn.execute(
                "INSERT INTO worktrees (daemon_id, path, task_id, contract_id) VALUES (%s, %s, %s, %s)",
                (bob_daemon, path, tid, contract),
            )
        assert alice_daemon is not None
    # When the backfill runs (the scheduled job runs every backfill; one batch of 1 daemon at a time)
    database = SingleConnectionDatabase(url)
    try:
        run = backfill.run(database, backfill_sql.CROSS_TENANT_LINKS, batch_size=1, budget=None)
        assert (run.rows_updated, run.finished) == (3, True)  # a worktree, a task, a state
        # (a finished backfill is not walked again; a new walk over the same rows writes nothing)
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM backfills WHERE name = %s", (backfill_sql.CROSS_TENANT_LINKS,))
        assert backfill.run(database, backfill_sql.CROSS_TENANT_LINKS, budget=None).rows_updated == 0
    finally:
        database.close()
    with psycopg.connect(url) as conn:
        # Then the crossed links are gone, the owner's own are intact
        worktrees: dict[str, Any] = dict(conn.execute("SELECT path, (task_id, contract_id) FROM worktrees").fetchall())
        assert worktrees["/w/alice"] == (None, None)
        assert worktrees["/w/bob"] == (str(kept), str(bob_contract))
        tasks: dict[Any, Any] = dict(conn.execute("SELECT id, daemon_id FROM tasks").fetchall())
        assert tasks == {crossed: None, kept: bob_daemon}
        states: dict[Any, Any] = dict(conn.execute("SELECT task_id, daemon_id FROM supervisor_states").fetchall())
        assert states == {crossed: None, kept: bob_daemon}
