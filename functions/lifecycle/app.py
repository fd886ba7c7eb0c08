"""Phase and status changes of a contract."""

from makima.api.routers import lifecycle
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(lifecycle.router)
