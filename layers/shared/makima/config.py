"""Typed settings, read once: environment variables (prefix ``MAKIMA_``, sections with ``__``), then an
optional TOML file (``MAKIMA_CONFIG``, default ``makima.toml`` in the working directory), then defaults.

The TOML file has the seed's sections::

    [contracts]
    auto_complete_enabled = true
    auto_advance_phases = true
    heartbeat_interval_seconds = 30
    heartbeat_timeout_seconds = 120
    stale_detection_interval_seconds = 60
    stale_threshold_minutes = 30
    supervisor_conversation_max_bytes = 2097152   # past it, the oldest messages are compacted away

    [rate_limits]            # per token; 0 = off (see RateLimitsConfig)
    user_per_second = 50
    user_burst = 1000
    daemon_per_second = 200
    daemon_burst = 5000

    [idempotency]            # Idempotency-Key on creating POSTs
    expires_after_seconds = 86400
    in_progress_seconds = 60
    [sync]                   # concurrent sync waits per process (see SyncConfig)
    waits_per_token = 10
    waits_max = 1000
    [monitor]                # what one monitor may cost (see MonitorConfig); 0 = off
    max_connections_per_token = 20
    messages_per_second = 1
    message_burst = 20
    max_message_bytes = 49152
    replay_max_events = 5000
    replay_max_scanned = 50000
    replay_deadline_seconds = 10

    [checkpoints]            # LangGraph checkpoints (see CheckpointsConfig)
    max_checkpoint_bytes = 4194304

    [database]               # set on the role, in its database, by migrate
    statement_timeout_seconds = 20
    idle_in_transaction_timeout_seconds = 60

    [feature_flags]
    enhanced_contract_status = true
    auto_complete = true
    supervisor_heartbeat = true
    monitoring_dashboard = true

and where the web dashboard page may send a token (all optional; unset means the page's own origin)::

    [dashboard]
    api_url = "https://api.example.com"
    monitor_url = "wss://monitor.example.com/live"
    extra_api_urls = ["https://staging-api.example.com"]
    extra_monitor_urls = []

Logic code never reads ``os.environ``: it receives a ``Settings`` (or the values it needs).
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from makima.domain.checkpoints import DEFAULT_MAX_CHECKPOINT_BYTES
from makima.domain.supervisors import DEFAULT_CONVERSATION_MAX_BYTES


class ContractsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Global default of each contract's auto_complete_enabled, and the switch for completing contracts
    # whose terminal phase gate is satisfied.
    auto_complete_enabled: bool = True
    # Whether a satisfied gate of a non-terminal phase advances the phase by itself.
    auto_advance_phases: bool = True
    heartbeat_interval_seconds: int = Field(default=30, ge=1, le=3600)
    heartbeat_timeout_seconds: int = Field(default=120, ge=1, le=86400)
    stale_detection_interval_seconds: int = Field(default=60, ge=1, le=86400)
    stale_threshold_minutes: int = Field(default=30, ge=1, le=525600)
    # The most a supervisor's stored conversation keeps (bytes, as PostgreSQL's text of each message):
    # past it, a save compacts the oldest messages away (services/supervisors.py). The answers that carry
    # the conversation page it (GET …/state?after_seq=), so this bounds storage, not response size.
    supervisor_conversation_max_bytes: int = Field(default=DEFAULT_CONVERSATION_MAX_BYTES, ge=262_144, le=268_435_456)
    # Worktrees a daemon confirmed removed are kept this long (a record of what was cleaned up), then
    # the hourly worktree_retention job deletes them.
    removed_worktree_retention_days: int = Field(default=7, ge=1, le=3650)

    @model_validator(mode="after")
    def _timeout_outlives_interval(self) -> ContractsConfig:
        # A timeout shorter than two intervals would call a supervisor dead after one late heartbeat.
        if self.heartbeat_timeout_seconds < 2 * self.heartbeat_interval_seconds:
            raise ValueError("heartbeat_timeout_seconds must be at least twice heartbeat_interval_seconds")
        return self


class FeatureFlagsConfig(BaseModel):
    """Defaults of the feature flags for the local store. On AWS the flags live in AppConfig."""

    model_config = ConfigDict(extra="forbid")

    enhanced_contract_status: bool = True
    auto_complete: bool = True
    supervisor_heartbeat: bool = True
    monitoring_dashboard: bool = True


# A host name or an IPv4/IPv6 literal, and a path of plain characters: nothing that could end a CSP
# directive (";", ","), add a source (a space) or a quote, once the origin is written into the header.
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")
_PATH = re.compile(r"[A-Za-z0-9._~/-]*")


def dashboard_url(raw: str, schemes: tuple[str, ...]) -> str:
    """``raw`` as the one form the dashboard page compares: lower-case scheme and host, the port only when
    it is not the scheme's default, the path without a trailing slash, nothing else.

    Raises ``ValueError`` (a settings error at start) for another scheme, credentials, a query or a
    fragment, or characters that have no business in an origin."""
    parts = urlsplit(raw.strip())
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValueError(f"{raw!r}: the scheme must be one of {', '.join(schemes)}")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"{raw!r}: no credentials, query or fragment")
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        raise ValueError(f"{raw!r}: not a host name")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{raw!r}: {exc}") from None
    default_port = 443 if scheme in ("https", "wss") else 80
    path = parts.path.rstrip("/")
    if not _PATH.fullmatch(path):
        raise ValueError(f"{raw!r}: the path may hold only letters, digits and . _ ~ / -")
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    return f"{scheme}://{netloc}{path}"


def _url_list(value: object) -> object:
    """A list from TOML, or from the environment as a JSON list or comma/space-separated URLs."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part for part in re.split(r"[\s,]+", text) if part]
    return value


_API = ("http", "https")
_MONITOR = ("ws", "wss")


class DashboardConfig(BaseModel):
    """Where the web dashboard page may send the token pasted into it, fixed at deploy time.

    The page calls its own origin unless told otherwise here, never by its link alone: a link's ``?api=``
    / ``?ws=`` may only choose among these (makima.local.web writes them into the page and its
    ``connect-src``). ``api_url`` is the API's base (the page appends ``/api/v1/...``; a trailing
    ``/api/v1`` is dropped); ``monitor_url`` the WebSocket monitor's full URL (default: the API's
    ``/api/v1/contracts/monitor``). The extra lists are further APIs and monitors a link may pick.
    """

    model_config = ConfigDict(extra="forbid")

    api_url: str | None = None
    monitor_url: str | None = None
    extra_api_urls: Annotated[list[str], NoDecode] = []
    extra_monitor_urls: Annotated[list[str], NoDecode] = []

    @field_validator("api_url", "monitor_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # The template passes an empty parameter as an empty string: that means "not configured".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("extra_api_urls", "extra_monitor_urls", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _url_list(value)

    @field_validator("api_url")
    @classmethod
    def _api(cls, value: str | None) -> str | None:
        return None if value is None else _api_base(value)

    @field_validator("extra_api_urls")
    @classmethod
    def _apis(cls, value: list[str]) -> list[str]:
        return [_api_base(v) for v in value]

    @field_validator("monitor_url")
    @classmethod
    def _monitor(cls, value: str | None) -> str | None:
        return None if value is None else dashboard_url(value, _MONITOR)

    @field_validator("extra_monitor_urls")
    @classmethod
    def _monitors(cls, value: list[str]) -> list[str]:
        return [dashboard_url(v, _MONITOR) for v in value]


def _api_base(raw: str) -> str:
    url = dashboard_url(raw, _API)
    return url.removesuffix("/api/v1")


class RateLimitsConfig(BaseModel):
    """Per-token request budgets: a token bucket per token, refilled at ``*_per_second`` and holding
    at most ``*_burst`` requests, one budget per token whatever process serves it (makima.services.
    rate_limits). A ``0`` in either field switches that kind's limit off.

    The defaults throttle no honest client: a person clicking (or a script) stays far below 50 a
    second, and a daemon batches its supervisors' heartbeats (one request per interval per daemon);
    the demo fleet, the reference supervisors, the test suites and the schemathesis run (one token,
    one worker) stay below them. What they stop is
    one token (leaked, or a runaway loop) taking the whole API's capacity for itself.
    """

    model_config = ConfigDict(extra="forbid")

    # User and admin tokens (people, the CLI, the dashboard page, scripts).
    user_per_second: float = Field(default=50.0, ge=0, le=100_000)
    user_burst: int = Field(default=1000, ge=0, le=1_000_000)
    # Daemon tokens (supervisor hosts: heartbeats, state saves, syncs for many supervisors each).
    daemon_per_second: float = Field(default=200.0, ge=0, le=100_000)
    daemon_burst: int = Field(default=5000, ge=0, le=1_000_000)
    # How much of a budget a process takes from the shared row at once: this many seconds of the rate
    # (at most a tenth of the burst, at least one request), then spent locally. Higher: fewer round
    # trips, more of a budget held by one process (lost to the others if it goes idle).
    slice_seconds: float = Field(default=0.5, gt=0, le=60)


class SyncConfig(BaseModel):
    """How many ``POST …/supervisor/sync`` calls may wait at once in one process (a wait holds no
    thread and no connection, but a waiter and a read when woken): past ``waits_per_token`` for one
    token, or ``waits_max`` in all, a waiting call is refused with 429 ``RATE_LIMITED`` and
    ``Retry-After`` before it asks anything (``wait_seconds: 0`` is never refused by these). ``0``: no
    limit. Per process: on AWS each Lambda container serves one call at a time, so there the limits
    that hold are the function's concurrency and the per-token request rates (``[rate_limits]``)."""

    model_config = ConfigDict(extra="forbid")

    waits_per_token: int = Field(default=10, ge=0, le=100_000)
    waits_max: int = Field(default=1000, ge=0, le=1_000_000)


class MonitorConfig(BaseModel):
    """Bounds on what one monitor (``WS /api/v1/contracts/monitor``) may cost the server (issue 13).

    A resume replays the missed events with its filter applied in SQL, reading at most
    ``replay_max_scanned`` log rows and sending at most ``replay_max_events``, for at most
    ``replay_deadline_seconds``; past any of them the monitor is told to reload the dashboard snapshot
    (a ``reload`` message) and goes live. Each token may hold ``max_connections_per_token`` open
    monitors and send ``messages_per_second`` messages (a bucket of ``message_burst``); a message is at
    most ``max_message_bytes``. ``0`` switches the connection and message-rate limits off.
    """

    model_config = ConfigDict(extra="forbid")

    max_connections_per_token: int = Field(default=20, ge=0, le=100_000)
    messages_per_second: float = Field(default=1.0, ge=0, le=10_000)
    message_burst: int = Field(default=20, ge=0, le=100_000)
    # A filter naming 1,000 contract ids (its maximum) is about 40 KB.
    max_message_bytes: int = Field(default=48 * 1024, ge=1024, le=1024 * 1024)
    replay_max_events: int = Field(default=5_000, ge=1, le=1_000_000)
    replay_max_scanned: int = Field(default=50_000, ge=1, le=10_000_000)
    # Well under the broadcaster's 29 s Lambda timeout, so a replay ends on its own terms.
    replay_deadline_seconds: float = Field(default=10.0, gt=0, le=600)


class DatabaseConfig(BaseModel):
    """Time limits of the application's sessions, set on its role in its database by migrate (the
    local stack at start, ``makima db migrate``, the deploy function): ``ALTER ROLE ... IN DATABASE
    ... SET``. ``0`` = no limit. Migrate's own sessions run without them."""

    model_config = ConfigDict(extra="forbid")

    # A statement running longer is cancelled (503 DATABASE_TIMEOUT): under API Gateway's 29 s, so the
    # client gets the API's answer rather than the gateway's.
    statement_timeout_seconds: float = Field(default=20.0, ge=0, le=86_400)
    # A session idle inside a transaction longer is ended, freeing its locks (a process that froze or
    # died mid-transaction); every transaction of the API is a few statements in a row.
    idle_in_transaction_timeout_seconds: float = Field(default=60.0, ge=0, le=86_400)


class IdempotencyConfig(BaseModel):
    """How long ``Idempotency-Key`` answers are kept (``makima.api.idempotency``)."""

    model_config = ConfigDict(extra="forbid")

    # How long a stored answer is replayed for its key: longer than any client keeps retrying one
    # request (the SDK's retries last seconds; a person re-running a script, hours).
    expires_after_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    # How long a request may hold its key INPROGRESS before a retry may take it over. Longer than a
    # request can live (the Lambda timeout, 29 s; the statement timeout): a request past it has died
    # before committing (its answer commits with its writes), so re-running it cannot duplicate.
    in_progress_seconds: int = Field(default=60, ge=1, le=3600)


class CheckpointsConfig(BaseModel):
    """LangGraph checkpoints (``/api/v1/checkpoints``, makima.integrations.langgraph).

    ``max_checkpoint_bytes`` caps one checkpoint with all its pending writes (decoded bytes; 413
    ``PAYLOAD_TOO_LARGE`` past it) and is also a list page's byte budget, so no request or answer
    carrying checkpoints grows past it (base64 adds a third: the 4 MiB default stays under Lambda's 6 MB
    payloads; above it, only for a server that is not behind Lambda). The checkpoint routes accept a
    body of up to about 4/3 of it, instead of ``max_body_bytes``."""

    model_config = ConfigDict(extra="forbid")

    max_checkpoint_bytes: int = Field(default=DEFAULT_MAX_CHECKPOINT_BYTES, ge=64 * 1024, le=256 * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        """The body of a request carrying up to ``max_checkpoint_bytes`` in base64, with room for the
        JSON around it (metadata, keys)."""
        return (self.max_checkpoint_bytes + 2) // 3 * 4 + 256 * 1024


def config_file() -> Path:
    return Path(os.environ.get("MAKIMA_CONFIG", "makima.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAKIMA_", env_nested_delimiter="__", extra="ignore")

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

    # AppConfig holds the feature flags on AWS (the template sets these); unset means the local store.
    appconfig_application: str | None = Field(default=None, validation_alias="APPCONFIG_APPLICATION")
    appconfig_environment: str | None = Field(default=None, validation_alias="APPCONFIG_ENVIRONMENT")
    appconfig_profile: str | None = Field(default=None, validation_alias="APPCONFIG_PROFILE")
    appconfig_max_age: int = Field(default=60, validation_alias="APPCONFIG_MAX_AGE")
    # Elsewhere: a TOML file whose [feature_flags] win over the settings', re-read at most every
    # flags_max_age seconds, so an operator switches a flag of a running stack by editing it (makima.flags).
    flags_file: str | None = None
    flags_max_age: float = Field(default=5.0, ge=0, le=3600)

    contracts: ContractsConfig = ContractsConfig()
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    sync: SyncConfig = SyncConfig()
    database: DatabaseConfig = DatabaseConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()
    monitor: MonitorConfig = MonitorConfig()
    checkpoints: CheckpointsConfig = CheckpointsConfig()
    feature_flags: FeatureFlagsConfig = FeatureFlagsConfig()
    dashboard: DashboardConfig = DashboardConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file()),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
