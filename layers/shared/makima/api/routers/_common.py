"""What every router shares: the prefix and the documented error responses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from makima.api.schemas import ErrorEnvelope

PREFIX = "/api/v1"

_ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 503)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": "Error envelope with a code"} for status in _ERROR_STATUSES
}


def make_router(tag: str) -> APIRouter:
    return APIRouter(prefix=PREFIX, tags=[tag], responses=ERROR_RESPONSES)
