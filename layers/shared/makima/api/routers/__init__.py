"""One router per Lambda function; ``ALL_ROUTERS`` is the whole API (local stack, OpenAPI)."""

from __future__ import annotations

from fastapi import APIRouter

from makima.api.routers import (
    admin,
    batch,
    chat,
    checkpoints,
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
    # A request is matched against each router's routes in this order (FastAPI walks the included routers:
    # 10 % of a heartbeat's CPU went to matching when its router came 14th, issue 15), so the hottest come
    # first: heartbeats, then the supervisor's state and the status moves. None of their paths can match
    # another router's route: each is /contracts/{id}/<literal>/... or /supervisors/..., and no route here
    # has a parameter where they have a literal (tests/unit/test_route_order.py).
    heartbeats.router,
    supervisors.router,
    lifecycle.router,
    # Before contracts: /contracts/dashboard must not be taken for /contracts/{contract_id}.
    dashboard.router,
    # Before contracts too, for /contracts/batch.
    batch.router,
    contracts.router,
    health.router,
    contract_types.router,
    completion.router,
    deliverables.router,
    tasks.router,
    questions.router,
    chat.router,
    events.router,
    daemons.router,
    admin.router,
    metrics.router,
    # LangGraph checkpoints: after the hot routers (none of their paths can match another's).
    checkpoints.router,
]
