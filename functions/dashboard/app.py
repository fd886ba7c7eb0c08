"""The dashboard: counts, stale and waiting contracts, recent events, resource usage."""

from makima.api.routers import dashboard
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(dashboard.router)
