"""The options of the Lambda container's connection (issue 14, item 4): behind RDS Proxy a session
that prepares a statement is pinned to one database connection, so the container's connection never
prepares; the local stack's pool (no proxy) keeps psycopg's default."""

from __future__ import annotations

from makima.db.connection import LedgerCursor, PooledDatabase, SingleConnectionDatabase
from makima.lambda_support.runtime import DatabaseEnvironment, SecretDatabase, build_database


def test_the_container_connection_prepares_nothing() -> None:
    # Given a function configured with a database URL (built, not connected)
    database = build_database(
        DatabaseEnvironment(DATABASE_URL="postgresql://app@proxy.example:5432/makima", MAKIMA_DB_CONNECT_TIMEOUT=3)
    )

    # Then its connection is opened with prepared statements off, in autocommit, rows as dicts, and the
    # cursor that notes what may have committed (the reconnect's re-run rule)
    options = database.connect_options()
    assert "prepare_threshold" in options
    assert options["prepare_threshold"] is None
    assert options["autocommit"] is True
    assert options["cursor_factory"] is LedgerCursor
    assert options["connect_timeout"] == 3
    assert options["row_factory"].__name__ == "dict_row"


def test_the_secret_database_connects_with_the_same_options() -> None:
    # The RDS secret's database (the deployed one, through the proxy) is a SingleConnectionDatabase too
    assert issubclass(SecretDatabase, SingleConnectionDatabase)
    assert "connect_options" not in SecretDatabase.__dict__
    assert "CONNECT_OPTIONS" not in SecretDatabase.__dict__


def test_the_local_pool_keeps_preparing() -> None:
    # The local stack talks to PostgreSQL without a proxy: its pool keeps psycopg's prepare_threshold
    assert "prepare_threshold" not in PooledDatabase.CONNECT_OPTIONS
