"""Feature flags (seed Cross-Cutting Concerns), evaluated through Powertools Feature Flags.

On AWS the flag document lives in AppConfig (application, environment and profile from the
settings, which the template sets); elsewhere a local store serves the ``[feature_flags]``
section of the settings. Either way callers ask one question: ``flags.enabled(Flag.AUTO_COMPLETE)``.
A disabled feature answers ``FeatureDisabled`` from its endpoints and does not half-run.
"""

from __future__ import annotations

import logging
from enum import StrEnum
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

        self._flags = FeatureFlags(store=store)
        self._defaults = defaults

    def enabled(self, flag: Flag) -> bool:
        default = bool(getattr(self._defaults, flag.value))
        try:
            return bool(self._flags.evaluate(name=flag.value, default=default))
        except Exception:  # ConfigurationStoreError, SchemaValidationError, ... never fail a request on it
            log.exception("feature flag %s: store unavailable, using default %s", flag.value, default)
            return default


def local_store(config: FeatureFlagsConfig) -> Any:
    from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

    class LocalStore(StoreProvider):
        """Serves the flags of the local settings (TOML / environment) in the Powertools schema."""

        @property
        def get_raw_configuration(self) -> dict[str, Any]:
            return flag_document(config)

        def get_configuration(self) -> dict[str, Any]:
            return flag_document(config)

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
    store = appconfig_store(settings) if settings.appconfig_application else local_store(settings.feature_flags)
    return PowertoolsFlags(store, settings.feature_flags)
