"""The HTTP API's Lambda authorizer: bearer token to principal (payload 2.0, simple responses)."""

from makima.lambda_support.authorizer import make_authorizer_handler

handler = make_authorizer_handler()
