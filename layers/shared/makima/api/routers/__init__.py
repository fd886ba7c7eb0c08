"""One router per Lambda function; ``ALL_ROUTERS`` is the whole API (local stack, OpenAPI)."""

from __future__ import annotations

from fastapi import APIRouter

from makima.api.routers import (
    admin,
    chat,
    completion,
    contract_types,
    contracts,
    deliverables,
    events,
    health,
    lifecycle,
    questions,
    tasks,
)

ALL_ROUTERS: list[APIRouter] = [
    health.router,
    contract_types.router,
    contracts.router,
    lifecycle.router,
    completion.router,
    deliverables.router,
    tasks.router,
    questions.router,
    chat.router,
    events.router,
    admin.router,
]
