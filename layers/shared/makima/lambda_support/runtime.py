"""The database of a Lambda container: built once, on first use, from the function's environment.

Where PostgreSQL is comes from, in order:

1. ``DATABASE_URL``, when set (tests, and any deployment that injects a URL);
2. the RDS secret named by ``DB_SECRET_ARN`` (JSON with host, port, username, password, dbname), read
   with Powertools parameters and cached for ``SECRET_MAX_AGE`` seconds; ``DB_HOST``, when set,
   replaces the secret's host with the RDS Proxy endpoint.

The container keeps one connection (``SingleConnectionDatabase``), re-opened after a failure. Handlers
hold ``CONTAINER_DATABASE``, a stand-in that builds the real one when a request first needs it, so
importing a handler never touches the network and ``reset()`` can point a warm container elsewhere.

Every handler runs through ``reconnecting`` (applied by ``observability.observed``): a request whose
connection, left open by an earlier request, turns out broken before anything the request sent could
have committed (the proxy closed it while idle, a failover) is run once more on a new connection,
instead of answering 503 (``SingleConnectionDatabase.should_rerun`` says when).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from psycopg.conninfo import make_conninfo
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from makima.db.connection import Conn, SingleConnectionDatabase
from makima.errors import DatabaseUnavailable

log = logging.getLogger("makima.lambda")

# Seconds a fetched secret is trusted before Secrets Manager is asked again (also bounds how long a
# container keeps trying rotated-away credentials).
SECRET_MAX_AGE = 300


class DatabaseEnvironment(BaseSettings):
    """What a function's environment says about its database (validated when first needed)."""

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    db_secret_arn: str | None = Field(default=None, validation_alias="DB_SECRET_ARN")
    # The RDS Proxy endpoint; empty (the template's default) means "use the secret's host".
    db_host: str | None = Field(default=None, validation_alias="DB_HOST")
    db_sslmode: str = Field(default="require", validation_alias="DB_SSLMODE")
    db_connect_timeout: float = Field(default=5.0, gt=0, validation_alias="MAKIMA_DB_CONNECT_TIMEOUT")
    # Shown as application_name in pg_stat_activity, to tell the functions' connections apart.
    function_name: str = Field(default="makima", validation_alias="AWS_LAMBDA_FUNCTION_NAME")

    @field_validator("database_url", "db_secret_arn", "db_host", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # CloudFormation cannot omit a variable conditionally as easily as it can leave it empty.
        return None if isinstance(value, str) and not value.strip() else value


def conninfo_from_secret(
    secret: Mapping[str, Any],
    *,
    host: str | None = None,
    sslmode: str = "require",
    application_name: str = "makima",
) -> str:
    """A libpq connection string from an RDS-format secret; ``host`` overrides the secret's host."""
    if not secret.get("username") or not (host or secret.get("host")):
        raise ValueError("the database secret needs at least username and host")
    return make_conninfo(
        "",
        host=host or str(secret["host"]),
        port=str(secret.get("port") or 5432),
        user=str(secret["username"]),
        password=str(secret.get("password") or ""),
        dbname=str(secret.get("dbname") or "postgres"),
        sslmode=sslmode,
        application_name=application_name[:63],
    )


def read_secret(arn: str) -> Mapping[str, Any]:
    """A JSON secret through Powertools parameters, cached ``SECRET_MAX_AGE`` seconds."""
    # Imported here: only functions configured with a secret pay for boto3 at cold start.
    from aws_lambda_powertools.utilities import parameters

    secret: Mapping[str, Any] = parameters.get_secret(arn, transform="json", max_age=SECRET_MAX_AGE)
    return secret


class SecretDatabase(SingleConnectionDatabase):
    """A ``SingleConnectionDatabase`` whose credentials come from Secrets Manager.

    When connecting fails, the secret is read again (through the Powertools cache, so Secrets Manager
    is asked at most once per ``SECRET_MAX_AGE``); if it changed, the connect is retried at once with
    the new credentials. A warm container thus follows a rotation or a moved host by itself, while an
    outage with unchanged credentials costs no second connect timeout.
    """

    def __init__(self, env: DatabaseEnvironment) -> None:
        assert env.db_secret_arn is not None
        self._env = env
        super().__init__(self._conninfo(), connect_timeout=env.db_connect_timeout)

    def _conninfo(self) -> str:
        env = self._env
        assert env.db_secret_arn is not None
        secret = read_secret(env.db_secret_arn)
        return conninfo_from_secret(
            secret, host=env.db_host, sslmode=env.db_sslmode, application_name=env.function_name
        )

    def _credentials_changed(self) -> bool:
        try:
            fresh = self._conninfo()
        except Exception:
            log.warning("could not re-read the database secret", exc_info=True)
            return False
        changed = fresh != self.url
        self.url = fresh
        return changed

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        with ExitStack() as stack:
            try:
                conn = stack.enter_context(super().connection())
            except DatabaseUnavailable:
                if not self._credentials_changed():
                    raise
                log.info("database secret changed; reconnecting with it")
                conn = stack.enter_context(super().connection())
            yield conn


def build_database(env: DatabaseEnvironment | None = None) -> SingleConnectionDatabase:
    """A new database for this container. ``DatabaseUnavailable`` when the environment names none or
    its secret cannot be read (the caller answers 503, and the next request tries again)."""
    env = env or DatabaseEnvironment()
    if env.database_url:
        return SingleConnectionDatabase(env.database_url, connect_timeout=env.db_connect_timeout)
    if env.db_secret_arn:
        try:
            return SecretDatabase(env)
        except Exception as exc:
            log.exception("could not read the database secret")
            raise DatabaseUnavailable(
                "the database is unavailable; retry shortly", {"reason": "SecretUnavailable"}
            ) from exc
    log.error("neither DATABASE_URL nor DB_SECRET_ARN is set")
    raise DatabaseUnavailable("the database is not configured", {"reason": "NotConfigured"})


_database: SingleConnectionDatabase | None = None
_lock = threading.Lock()


def get_database() -> SingleConnectionDatabase:
    """This container's database, built on first call and kept until ``reset()``."""
    global _database
    if _database is None:
        with _lock:
            if _database is None:
                _database = build_database()
    return _database


def reset() -> None:
    """Close and forget this container's database; the next use builds it from the environment again
    (tests point warm handlers at another database this way)."""
    global _database
    with _lock:
        if _database is not None:
            _database.close()
        _database = None


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def reconnecting(handler: Handler) -> Handler:
    """``handler``, re-run once when its request met a broken connection before anything of it could
    have committed (a whole unit of work: re-running it is the request arriving once more). A request
    that may have committed something, and a connection opened by the request itself that fails (the
    database is down), answer as they did: 503 ``DATABASE_UNAVAILABLE``, no loop."""

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        database = _database
        if database is not None:
            database.begin_request()
        response = handler(event, context)
        database = _database
        if database is not None and database.should_rerun():
            log.warning("the container's database connection was closed while idle; running the request again")
            database.begin_request(rerun=True)
            response = handler(event, context)
        return response

    return handle


class ContainerDatabase:
    """A ``Database`` that is whatever ``get_database()`` currently returns."""

    reads_in_transaction = True  # as the SingleConnectionDatabase it stands for (db/connection.py: reading)

    def connection(self) -> Any:
        return get_database().connection()

    def close(self) -> None:
        reset()


CONTAINER_DATABASE = ContainerDatabase()
