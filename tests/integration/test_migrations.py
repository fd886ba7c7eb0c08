"""Migrations: up -> down -> up on a real database, and the Task 1.4 backfill."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from yoyo import get_backend, read_migrations

from makima.db.migrate import _yoyo_url, applied_migrations, migrate, migrations_dir, rollback

pytestmark = pytest.mark.integration

# The migrations in the order they apply (each depends on the one before it).
CHAIN = [
    "0001_initial",
    "0002_enhanced_contract_status",
    "0002b_contract_activity_checks",
    "0002c_contract_activity_not_null",
    "0002d_enhanced_contract_status_indexes",
    "0003_auto_complete_settings",
    "0003b_task_phase",
    "0003c_auto_complete_indexes",
    "0004_live_contract_indexes",
    "0005_supervisors",
    "0005b_tasks_daemon_index",
    "0006_heartbeat_hot_updates",
    "0007_monitoring",
    "0008_version_per_transaction",
    "0009_monotonic_metric_counters",
    "0010_supervisor_lifecycle",
    "0011_contract_events_type_index",
    "0012_monitor_connection_tokens",
    "0012b_monitor_connection_tokens_index",
    "0013_metrics_token_kind",
    "0013b_metrics_token_kind_validate",
    "0014_rate_limits",
    "0016_supervisor_conversation_window",
    "0017_monitor_replay_deadline",
    "0017b_contract_events_status_moves_index",
    "0019_idempotency",
    "0020_token_revocation_notice",
    "0021_contract_activity_sort_indexes",
    "0022_langgraph_checkpoints",
    "0023_langgraph_interrupt_questions",
]


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
    return {r[0] for r in rows} - {"_yoyo_log", "_yoyo_migration", "_yoyo_version", "yoyo_lock"}


def test_up_down_up(fresh_database: Callable[[str], str]) -> None:
    url = fresh_database("makima_migrations")
    # Given an empty database, when migrated up, then every table exists and the types are seeded
    assert migrate(url) == CHAIN
    up_tables = _tables(url)
    assert {
        "contracts",
        "tasks",
        "questions",
        "chat_messages",
        "contract_events",
        "users",
        "api_tokens",
        "monitor_connections",
        "stale_reports",
    } <= up_tables
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM contract_types WHERE builtin").fetchone() == (2,)
    # When rolled all the way down, then nothing of ours is left
    assert rollback(url, steps=len(CHAIN)) == CHAIN[::-1]
    assert _tables(url) == set()
    assert applied_migrations(url) == []
    # When migrated up again, then the schema is back, identical
    migrate(url)
    assert _tables(url) == up_tables
    assert migrate(url) == []  # idempotent


def test_enhanced_status_backfill_and_rollback(fresh_database: Callable[[str], str]) -> None:
    url = fresh_database("makima_backfill")
    backend = get_backend(_yoyo_url(url))
    migrations = read_migrations(migrations_dir())
    # Given the schema as it stood before Task 1.4, with contracts last touched long ago
    backend.apply_migrations(backend.to_apply(migrations.filter(lambda m: m.id == "0001_initial")))
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO contract_types (name, definition) VALUES ('simple', '{}'::jsonb)")
        uid = conn.execute("INSERT INTO users (name, role) VALUES ('old', 'user') RETURNING id").fetchone()
        assert uid is not None
        for status, age in (("active", "3 days"), ("completed", "10 days"), ("archived", "30 days")):
            conn.execute(
                """INSERT INTO contracts (owner_id, name, contract_type, phase, status, updated_at)
                   VALUES (%s, %s, 'simple', 'plan', %s, now() - %s::interval)""",
                (uid[0], f"legacy-{status}", status, age),
            )
    # When 0002 runs
    migrate(url)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, last_activity_at = updated_at, status_changed_at = updated_at FROM contracts ORDER BY name"
        ).fetchall()
        # Then activity is backfilled from updated_at (not "now"), and old statuses are untouched
        assert rows == [("active", True, True), ("archived", True, True), ("completed", True, True)]
        # And new contracts default to created, with the new statuses allowed
        conn.execute(
            "INSERT INTO contracts (owner_id, name, contract_type, phase) VALUES (%s, 'new', 'simple', 'plan')",
            (uid[0],),
        )
        conn.execute("UPDATE contracts SET status = 'paused' WHERE name = 'legacy-active'")
        assert conn.execute("SELECT status FROM contracts WHERE name = 'new'").fetchone() == ("created",)
    # When 0002 is rolled back, new statuses fold onto the legacy ones so the old check holds again
    rolled = rollback(url, steps=len(CHAIN) - 1)
    assert rolled[-1] == "0002_enhanced_contract_status"
    with psycopg.connect(url) as conn:
        statuses: dict[str, str] = dict(conn.execute("SELECT name, status FROM contracts").fetchall())
        assert statuses == {
            "legacy-active": "active",
            "legacy-completed": "completed",
            "legacy-archived": "archived",
            "new": "active",
        }
    migrate(url)
