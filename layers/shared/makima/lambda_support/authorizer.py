"""The HTTP API's Lambda authorizer: a bearer token in, the principal (or a refusal) out.

Payload format 2.0 with simple responses. The context carries only the principal's id, role and token
id (API Gateway caps authorizer results at 8 KB; ``makima.api.deps`` reads exactly these keys).

When the token cannot be checked because the database is down, the authorizer defers instead of
refusing: it lets the request through with a context that names no principal (``verify: deferred``).
Every function resolves the bearer token itself whenever the context has no ``user_id``, so nothing
unchecked is acted on, and the caller gets the API's own 503 ``DATABASE_UNAVAILABLE`` (retry) rather
than API Gateway's 403 (which clients read as "your token is bad"). Any other failure refuses.

The lookup also records the token's use (``last_used_at``, at most once a minute, in the same statement:
``services/token_usage.py``). The authorizer runs once per API Gateway cache miss, i.e. about once a
minute per token, which is the resolution ``last_used_at`` promises.

A metrics token is allowed here with role ``metrics``: the authorizer's answer is cached per token, not
per route, so it cannot tell /metrics from the rest; every function refuses the role except the metrics
function (``api/deps.py``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
    APIGatewayAuthorizerResponseV2,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from makima.domain.principals import Principal
from makima.errors import DatabaseUnavailable, Unauthorized
from makima.lambda_support.observability import LambdaHandler, logger, metrics, observed
from makima.lambda_support.runtime import get_database
from makima.services import auth, token_usage


def _authorization_header(event: APIGatewayAuthorizerEventV2) -> str | None:
    # API Gateway lower-cases header names in v2 events; a hand-made event may not.
    for name, value in (event.headers or {}).items():
        if name.lower() == "authorization":
            return value
    return None


def allow(principal: Principal) -> dict[str, Any]:
    context = {
        "user_id": str(principal.user_id),
        "role": principal.role.value,
        "token_id": str(principal.token_id) if principal.token_id else "",
    }
    return APIGatewayAuthorizerResponseV2(authorize=True, context=context).asdict()


def defer() -> dict[str, Any]:
    """Let the function check the token itself (see the module docstring)."""
    return APIGatewayAuthorizerResponseV2(authorize=True, context={"verify": "deferred"}).asdict()


def deny() -> dict[str, Any]:
    return APIGatewayAuthorizerResponseV2(authorize=False).asdict()


def authorize(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayAuthorizerEventV2(event)
    token = auth.bearer(_authorization_header(request))
    if token is None:
        metrics.add_metric(name="AuthorizerDenied", unit=MetricUnit.Count, value=1)
        return deny()
    try:
        principal = token_usage.resolve_and_touch(get_database(), token)
    except Unauthorized:
        metrics.add_metric(name="AuthorizerDenied", unit=MetricUnit.Count, value=1)
        return deny()
    except DatabaseUnavailable as exc:
        logger.error("token check deferred: the database is unavailable", extra={"details": exc.details})
        metrics.add_metric(name="AuthorizerDatabaseUnavailable", unit=MetricUnit.Count, value=1)
        return defer()
    except Exception:
        logger.exception("token not checked: unexpected error")
        metrics.add_metric(name="AuthorizerError", unit=MetricUnit.Count, value=1)
        return deny()
    logger.append_keys(user_id=str(principal.user_id), role=principal.role.value)
    return allow(principal)


def make_authorizer_handler() -> LambdaHandler:
    """The authorizer function's handler, with the same observability as every HTTP handler."""
    return observed(authorize)
