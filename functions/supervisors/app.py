"""A contract's supervisor: start, status, heartbeat history, sync, persisted state, restore, restart."""

from makima.api.routers import supervisors
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(supervisors.router)
