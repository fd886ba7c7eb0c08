"""The event log of a contract."""

from makima.api.routers import events
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(events.router)
