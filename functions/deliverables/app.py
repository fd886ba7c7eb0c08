"""Complete and list the deliverables of a contract."""

from makima.api.routers import deliverables
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(deliverables.router)
