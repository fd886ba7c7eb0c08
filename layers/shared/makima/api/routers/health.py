"""GET /health: liveness of the API and reachability of the database (no token needed)."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from makima import __version__
from makima.api.deps import DB
from makima.api.routers._common import make_router
from makima.api.schemas import Health
from makima.errors import DatabaseUnavailable

router = make_router("health", common=())  # no token, no body: only its own 503
log = logging.getLogger("makima.api")


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(db: DB) -> Health | JSONResponse:
    try:
        with db.connection() as conn:
            conn.execute("SELECT 1")
    except DatabaseUnavailable:
        body = Health(status="degraded", database="unavailable", version=__version__)
        return JSONResponse(status_code=503, content=body.model_dump())
    return Health(status="ok", database="ok", version=__version__)
