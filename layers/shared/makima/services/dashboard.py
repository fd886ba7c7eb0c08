"""The dashboard (seed 5.4): one consistent snapshot of the caller's contracts (everyone's for admins),
as typed records (``domain/dashboard.py``)."""

from __future__ import annotations

from datetime import timedelta

from makima.db import dashboard as dashboard_sql
from makima.db.connection import Database, snapshot
from makima.domain.dashboard import Dashboard
from makima.domain.models import ContractEvent
from makima.domain.principals import Principal
from makima.services.common import scope

__all__ = ["Dashboard", "dashboard"]


def dashboard(db: Database, principal: Principal, *, stale_threshold: timedelta, limit: int = 50) -> Dashboard:
    owner = scope(principal)
    # One REPEATABLE READ snapshot, so the counts and the lists agree with each other.
    with db.connection() as conn, snapshot(conn):
        return Dashboard(
            status_counts=dashboard_sql.status_counts(conn, owner),
            phase_counts=dashboard_sql.phase_counts(conn, owner),
            stale=dashboard_sql.stale(conn, owner, stale_threshold, limit),
            waiting=dashboard_sql.waiting(conn, owner, limit),
            recent_events=[ContractEvent.model_validate(e) for e in dashboard_sql.recent_events(conn, owner, 20)],
            resource_usage=dashboard_sql.resource_usage(conn, owner),
        )
