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
    # First: the hottest path. A request is matched against each router's routes in this order (FastAPI
    # walks the included routers; 10 % of a heartbeat's CPU went to matching when it came 14th, issue 15).
    # Its paths (/contracts/{id}/supervisor/heartbeat, /supervisors/heartbeats) match no other route.
    heartbeats.router,
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
    daemons.router,
    admin.router,
    metrics.router,
]
