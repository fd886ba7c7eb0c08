"""The dashboard (seed 5.4): one consistent snapshot of the caller's contracts (everyone's for admins)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from makima.db import dashboard as dashboard_sql
from makima.db.connection import Database
from makima.domain.principals import Principal
from makima.services.common import scope


@dataclass(frozen=True)
class Dashboard:
    status_counts: dict[str, int]
    phase_counts: dict[str, int]
    stale: list[dict[str, Any]]
    waiting: list[dict[str, Any]]
    recent_events: list[dict[str, Any]]
    resource_usage: dict[str, int]


def dashboard(db: Database, principal: Principal, *, stale_threshold: timedelta, limit: int = 50) -> Dashboard:
    owner = scope(principal)
    with db.connection() as conn, conn.transaction():
        # One REPEATABLE READ snapshot, so the counts and the lists agree with each other.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return Dashboard(
            status_counts=dashboard_sql.status_counts(conn, owner),
            phase_counts=dashboard_sql.phase_counts(conn, owner),
            stale=dashboard_sql.stale(conn, owner, stale_threshold, limit),
            waiting=dashboard_sql.waiting(conn, owner, limit),
            recent_events=dashboard_sql.recent_events(conn, owner, 20),
            resource_usage=dashboard_sql.resource_usage(conn, owner),
        )
