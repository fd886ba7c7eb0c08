"""Spawn, list, get and update the tasks of a contract."""

from makima.api.routers import tasks
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(tasks.router)
