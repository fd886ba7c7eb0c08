"""GET /metrics: the seed's metrics in the Prometheus text format, read from the database (admins)."""

from makima.api.routers import metrics
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(metrics.router)
