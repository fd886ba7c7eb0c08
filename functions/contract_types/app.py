"""GET /api/v1/contract-types."""

from makima.api.routers import contract_types
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(contract_types.router)
