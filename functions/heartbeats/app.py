"""Heartbeat ingest: one supervisor's, or a daemon's batch (the hottest path, the smallest app)."""

from makima.api.routers import heartbeats
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(heartbeats.router)
