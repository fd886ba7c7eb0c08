"""Daemons: register, heartbeat with their worktrees, confirm removals; reassign the tasks of dead ones."""

from makima.api.routers import daemons
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(daemons.router)
