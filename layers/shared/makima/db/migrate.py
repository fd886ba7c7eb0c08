"""Schema migrations (yoyo-migrations over plain SQL files, each with a rollback) and type seeding.

The same entry points serve ``makima db migrate`` / ``rollback``, the local stack at start, the tests
and the deploy-time migration function on AWS.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from makima.domain.contract_types import builtin_types


def migrations_dir() -> str:
    return str(resources.files("makima") / "migrations")


def _yoyo_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql"}:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return f"postgresql+psycopg://{rest}"


def _backend_and_migrations(url: str) -> tuple[Any, Any]:
    from yoyo import get_backend, read_migrations

    return get_backend(_yoyo_url(url)), read_migrations(migrations_dir())


def migrate(url: str) -> list[str]:
    """Apply every pending migration, then sync the built-in contract types. Returns what ran."""
    backend, migrations = _backend_and_migrations(url)
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    sync_builtin_types(url)
    ensure_heartbeat_partitions(url)
    return [m.id for m in pending]


def rollback(url: str, steps: int = 1) -> list[str]:
    """Roll back the last ``steps`` applied migrations (newest first). Returns what was undone."""
    backend, migrations = _backend_and_migrations(url)
    with backend.lock():
        applied = backend.to_rollback(migrations)
        chosen = applied[:steps]
        backend.rollback_migrations(chosen)
    return [m.id for m in chosen]


def applied_migrations(url: str) -> list[str]:
    backend, migrations = _backend_and_migrations(url)
    return [m.id for m in migrations if backend.is_applied(m)]


def sync_builtin_types(url: str) -> None:
    """Upsert the packaged contract types; a newer file version replaces the stored definition."""
    with psycopg.connect(url) as conn:
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
    from datetime import UTC, datetime

    from psycopg.rows import dict_row

    from makima.db.heartbeats import ensure_partitions

    with psycopg.connect(url, row_factory=dict_row) as conn:
        present = conn.execute("SELECT to_regclass('supervisor_heartbeats') IS NOT NULL AS present").fetchone()
        if present and present["present"]:
            ensure_partitions(conn, now=datetime.now(UTC))
