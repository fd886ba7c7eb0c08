"""Post and list the chat messages of a contract."""

from makima.api.routers import chat
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(chat.router)
