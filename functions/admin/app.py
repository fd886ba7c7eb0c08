"""Users and API tokens."""

from makima.api.routers import admin
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(admin.router)
