"""Batch operations over contracts (admins): archive, pause, resume, clean up, restart stale supervisors."""

from makima.api.routers import batch
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(batch.router)
