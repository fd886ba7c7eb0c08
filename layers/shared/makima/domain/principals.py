"""Who is calling: resolved from a bearer token by the authorizer (AWS) or the API itself (local)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"
    # A daemon acts for the user who owns its token: it sees that user's contracts and nothing else,
    # and cannot do what only a person may (answer questions, manage tokens).
    DAEMON = "daemon"
    # A metrics token (Prometheus): reads GET /metrics and nothing else. Every other route, the monitor
    # and token management refuse it (api/deps.py: get_principal admits it nowhere, get_scraper only on
    # /metrics), so a leaked scrape credential reads fleet-wide counts and can change nothing.
    METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: UUID
    role: Role
    token_id: UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def may_use_api(self) -> bool:
        """Whether this caller may use the API at large (everything but /metrics needs it)."""
        return self.role is not Role.METRICS

    @property
    def may_scrape_metrics(self) -> bool:
        """Whether this caller may read the fleet-wide metrics: admins and metrics tokens."""
        return self.role in (Role.ADMIN, Role.METRICS)

    @property
    def actor(self) -> str:
        """How this caller is named in event rows."""
        return f"{self.role.value}:{self.user_id}"
