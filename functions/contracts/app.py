"""Create, list, get and update contracts."""

from makima.api.routers import contracts
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(contracts.router)
