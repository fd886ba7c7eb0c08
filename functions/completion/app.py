"""Completion detection: phase readiness, the completion check, the per-contract auto-complete switch."""

from makima.api.routers import completion
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(completion.router)
