"""LangGraph checkpoints (makima.integrations.langgraph): put, writes, get, list, delete, copy, prune, bind."""

from makima.api.routers import checkpoints
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(checkpoints.router)
