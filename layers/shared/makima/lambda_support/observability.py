"""Logger, Tracer and Metrics, created once per container and applied to every handler the same way.

Tracing switches itself off outside Lambda (no ``LAMBDA_TASK_ROOT``) and when
``POWERTOOLS_TRACE_DISABLED`` is set, so importing a handler locally or in tests never needs an
X-Ray daemon.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from makima.lambda_support.runtime import reconnecting

SERVICE = "makima-contracts"
NAMESPACE = "Makima"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def route_package_logs() -> None:
    """Send the shared package's stdlib loggers (``makima.*``) through the Powertools handler, so they
    come out as the same structured JSON, correlation id included. It stops them propagating to the
    root logger, which is right in a Lambda container and wrong in a test session; hence it runs on
    import only inside Lambda."""
    logging.getLogger("makima")  # register the parent: Powertools configures top-level loggers only
    copy_config_to_registered_loggers(source_logger=logger, include={"makima"})


if os.environ.get("LAMBDA_TASK_ROOT"):
    route_package_logs()


def count_http_answer(status: int) -> None:
    """Count an HTTP function's answer, and a 5xx among them (EMF, namespace Makima): the signal a
    deployment's canary is judged on. A handled failure answers 500 without failing the invocation, so
    Lambda's own Errors metric never sees it; API Gateway's 5xx metric does, but an alarm on it cannot
    gate the functions' aliases (the API refers to them: a dependency cycle)."""
    metrics.add_metric(name="HttpAnswers", unit=MetricUnit.Count, value=1)
    if status >= 500:
        metrics.add_metric(name="HttpServerErrors", unit=MetricUnit.Count, value=1)


LambdaHandler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

# HTTP API (v2) and REST API (v1) events both carry their request id at requestContext.requestId.
API_GATEWAY_REQUEST_ID = correlation_paths.API_GATEWAY_HTTP


def _counting_answers(handler: LambdaHandler) -> LambdaHandler:
    """``handler``, its HTTP answer counted (``count_http_answer``) once, whatever ran inside it."""

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        response = handler(event, context)
        count_http_answer(int(response.get("statusCode") or 500))
        return response

    return handle


def observed(
    handler: LambdaHandler, *, correlation_id_path: str = API_GATEWAY_REQUEST_ID, http: bool = False
) -> LambdaHandler:
    """``handler`` with the standard stack: Lambda context and correlation id in every log line, an
    X-Ray subsegment (the response is not recorded: it may hold a freshly issued token), and the
    metrics of the invocation flushed as EMF, a cold-start count included; and the request run once
    more when the container's connection broke before anything of it committed (``reconnecting``).
    ``http``: an HTTP function's handler, whose answer is counted after that decision (a re-run
    request is one answer, not a 503 and a 200)."""
    inner = cast(LambdaHandler, reconnecting(handler))
    if http:
        inner = _counting_answers(inner)
    with_metrics = metrics.log_metrics(inner, capture_cold_start_metric=True)
    with_trace = tracer.capture_lambda_handler(with_metrics, capture_response=False)
    # clear_state: keys appended during one invocation (e.g. the caller) must not leak into the next.
    with_logs = logger.inject_lambda_context(with_trace, correlation_id_path=correlation_id_path, clear_state=True)
    return cast(LambdaHandler, with_logs)
