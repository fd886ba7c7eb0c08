"""One router per Lambda function; ``ALL_ROUTERS`` is the whole API (local stack, OpenAPI)."""

from __future__ import annotations

from fastapi import APIRouter

from makima.api.routers import (
    admin,
    batch,
    chat,
    completion,
    contract_types,
    contracts,
    daemons,
    dashboard,
    deliverables,
    events,
    health,
    heartbeats,
    lifecycle,
    metrics,
    questions,
    supervisors,
    tasks,
)

ALL_ROUTERS: list[APIRouter] = [
    health.router,
    contract_types.router,
    # Before contracts: /contracts/dashboard must not be taken for /contracts/{contract_id}.
    dashboard.router,
    # Before contracts too, for /contracts/batch.
    batch.router,
    contracts.router,
    lifecycle.router,
    completion.router,
    deliverables.router,
    tasks.router,
    questions.router,
    chat.router,
    events.router,
    supervisors.router,
    heartbeats.router,
    daemons.router,
    admin.router,
    metrics.router,
]
