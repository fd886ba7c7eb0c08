"""Typed settings, read once from the environment (prefix ``MAKIMA_``) and ``DATABASE_URL``.

Logic code never reads ``os.environ``: it receives a ``Settings`` (or the values it needs).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAKIMA_", extra="ignore")

    # Where PostgreSQL is. Unset locally means "start the embedded server"; on AWS the functions
    # build it from the Secrets Manager secret instead (see makima.lambda_support).
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    # Embedded PostgreSQL data directory for the local stack; survives restarts.
    data_dir: str = ".makima/pgdata"

    # Requests larger than this are refused with 413 before they are parsed.
    max_body_bytes: int = 256 * 1024
    # Pool bounds for long-running processes (the local stack); a Lambda uses one connection.
    pool_min_size: int = 1
    pool_max_size: int = 10
    # Seconds a request may wait for a database connection before answering 503.
    db_connect_timeout: float = 5.0

    # Default staleness threshold for list filters when the caller gives none (seed: 30m).
    stale_threshold_minutes: int = 30


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
