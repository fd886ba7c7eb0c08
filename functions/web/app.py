"""GET /dashboard (no token): the web dashboard's page and its files, static, from the layer."""

from makima.lambda_support.web import make_dashboard_handler

handler = make_dashboard_handler()
