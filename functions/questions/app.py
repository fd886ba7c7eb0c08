"""Ask, list, answer and acknowledge the questions of a contract."""

from makima.api.routers import questions
from makima.lambda_support.http import make_http_handler

handler = make_http_handler(questions.router)
