"""Feature flags (seed Cross-Cutting Concerns), evaluated through Powertools Feature Flags.

On AWS the flag document lives in AppConfig (application, environment and profile from the
settings, which the template sets); elsewhere a local store serves the ``[feature_flags]``
section of the settings. Either way callers ask one question: ``flags.enabled(Flag.AUTO_COMPLETE)``.
A disabled feature answers ``FeatureDisabled`` from its endpoints and does not half-run.

Flags are evaluated on every call, never captured at start: switching one takes effect in a running
process. On AWS, Powertools re-reads AppConfig when its ``max_age`` (``APPCONFIG_MAX_AGE``) expires.
Locally the same holds for the flags file (``flags_file``, ``MAKIMA_FLAGS_FILE``): the local store
re-reads it at most every ``flags_max_age`` seconds, and its ``[feature_flags]`` values win over the
settings' (docs/operations.md, "Switching a feature flag").
"""

from __future__ import annotations

import logging
import threading
import time
import tomllib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from makima.config import FeatureFlagsConfig, Settings
from makima.errors import FeatureDisabled

log = logging.getLogger("makima.flags")


class Flag(StrEnum):
    ENHANCED_CONTRACT_STATUS = "enhanced_contract_status"
    AUTO_COMPLETE = "auto_complete"
    SUPERVISOR_HEARTBEAT = "supervisor_heartbeat"
    MONITORING_DASHBOARD = "monitoring_dashboard"


class Flags(Protocol):
    def enabled(self, flag: Flag) -> bool: ...


def require(flags: Flags, flag: Flag) -> None:
    if not flags.enabled(flag):
        raise FeatureDisabled(f"the {flag.value} feature is disabled", {"feature": flag.value})


def flag_document(config: FeatureFlagsConfig) -> dict[str, Any]:
    """The Powertools feature-flag schema for fixed values: ``{"auto_complete": {"default": true}, ...}``."""
    return {name: {"default": bool(value)} for name, value in config.model_dump().items()}


class PowertoolsFlags:
    """Evaluates flags with Powertools ``FeatureFlags`` over the given store. A store failure keeps the
    last known value or, with none, the configured default: a flag outage must not take the API down."""

    def __init__(self, store: Any, defaults: FeatureFlagsConfig) -> None:
        from aws_lambda_powertools.utilities.feature_flags import FeatureFlags

        self._store = store
        self._flags = FeatureFlags(store=store)
        self._defaults = defaults
        self._lock = threading.Lock()
        self._document: Any = None  # the store's document the memo below was evaluated from
        self._memo: dict[Flag, bool] = {}

    def enabled(self, flag: Flag) -> bool:
        """Evaluated on every call against the store's current document (which the store re-reads
        after its ``max_age``); the evaluation itself is kept per document. Powertools validates the
        document's schema on every ``evaluate``: two or three times per request for an unchanged
        document (2 to 5 % of a request's CPU on the local stack, issue 15)."""
        default = bool(getattr(self._defaults, flag.value))
        try:
            document = self._store.get_configuration()
            with self._lock:
                if document is not self._document and document != self._document:
                    self._document, self._memo = document, {}
                elif flag in self._memo:
                    return self._memo[flag]
            value = bool(self._flags.evaluate(name=flag.value, default=default))
            with self._lock:
                if document == self._document:
                    self._memo[flag] = value
            return value
        except Exception:  # ConfigurationStoreError, SchemaValidationError, ... never fail a request on it
            log.exception("feature flag %s: store unavailable, using default %s", flag.value, default)
            return default


class LocalFlagValues:
    """The local flag values: the settings' ``[feature_flags]``, overlaid with the flags file when there
    is one, re-read at most every ``max_age`` seconds (as AppConfig's ``max_age`` on AWS).

    The file is TOML with a ``[feature_flags]`` table (``makima.toml`` itself will do); keys it does not
    name keep the settings' value, and a missing file means the settings' values. A file that does not
    parse, or names an unknown flag, is logged and ignored: the last good values stay, so a typo made
    while switching a flag never turns every feature back to its default.
    """

    def __init__(
        self,
        defaults: FeatureFlagsConfig,
        path: Path | None = None,
        *,
        max_age: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._defaults = defaults
        self._path = path
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._values = defaults
        self._read_at: float | None = None

    def current(self) -> FeatureFlagsConfig:
        if self._path is None:
            return self._defaults
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._max_age:
                self._read_at = now
                self._values = self._read(self._path)
            return self._values

    def _read(self, path: Path) -> FeatureFlagsConfig:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._defaults
        except OSError:
            log.exception("flags file %s unreadable; keeping the current flags", path)
            return self._values
        try:
            table = tomllib.loads(text).get("feature_flags", {})
            return FeatureFlagsConfig.model_validate(self._defaults.model_dump() | dict(table))
        except Exception:  # TOMLDecodeError, ValidationError, a non-table: keep the last good values
            log.exception("flags file %s invalid; keeping the current flags", path)
            return self._values


def local_store(config: FeatureFlagsConfig, path: Path | None = None, *, max_age: float = 5.0) -> Any:
    from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

    values = LocalFlagValues(config, path, max_age=max_age)

    class LocalStore(StoreProvider):
        """Serves the local flag values (settings, then the flags file) in the Powertools schema. The
        document is built again only when a value changed (the values are read on every call, so a
        flag switched in the file or in the settings is seen at once): every request asks
        (``PowertoolsFlags.enabled``), and building it each time was 1.6 % of a heartbeat's server CPU
        (issue 15)."""

        def __init__(self) -> None:
            self._built: tuple[tuple[Any, ...], dict[str, Any]] | None = None

        def _document(self) -> dict[str, Any]:
            current, built = values.current(), self._built
            key = tuple(vars(current).values())
            if built is None or built[0] != key:
                built = self._built = (key, flag_document(current))
            return built[1]

        @property
        def get_raw_configuration(self) -> dict[str, Any]:
            return self._document()

        def get_configuration(self) -> dict[str, Any]:
            return self._document()

    return LocalStore()


def appconfig_store(settings: Settings) -> Any:
    from aws_lambda_powertools.utilities.feature_flags import AppConfigStore

    return AppConfigStore(
        environment=settings.appconfig_environment or "",
        application=settings.appconfig_application or "",
        name=settings.appconfig_profile or "",
        max_age=settings.appconfig_max_age,
    )


def build_flags(settings: Settings) -> Flags:
    """AppConfig when the deployment names an application, the local store otherwise."""
    if settings.appconfig_application:
        store = appconfig_store(settings)
    else:
        path = Path(settings.flags_file) if settings.flags_file else None
        store = local_store(settings.feature_flags, path, max_age=settings.flags_max_age)
    return PowertoolsFlags(store, settings.feature_flags)
