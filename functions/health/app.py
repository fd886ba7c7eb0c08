"""GET /api/v1/health (no token) and GET /api/v1/openapi.json, the whole API's schema."""

from makima.api.routers import health
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(health.router)
