"""The deploy-time check of the stack's parameters: a CloudFormation custom resource that validates the
settings the stack is about to give its functions, before anything expensive is created or changed.

CloudFormation checks each parameter on its own (``AllowedValues``, ``MinValue``...), and its ``Rules``
can compare values for equality only. Some settings constrain each other (``[contracts]``
``heartbeat_timeout_seconds`` must be at least twice ``heartbeat_interval_seconds``; the dashboard URLs
must be plain URLs): with a combination ``makima.config`` refuses, every function would fail at start,
the migrations 15 minutes into a first deploy. ``ParametersCheck`` (template.yaml) receives the same
``MAKIMA_*`` values as the functions' environment (tests/infra keeps the two lists equal), builds
``makima.config.Settings`` from them with the code that will run, and answers ``FAILED`` with every
refused value: the database ``DependsOn`` it, so a bad combination fails a create within a minute and
an update before any function gets the new environment (the rollback then has nothing to undo).

Delete answers ``SUCCESS`` at once: there is nothing to remove. Importing this module touches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes import CloudFormationCustomResourceEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from makima.config import Settings
from makima.lambda_support.migrations import FAILED, REASON_LIMIT, SUCCESS, send_response
from makima.lambda_support.observability import LambdaHandler, logger, observed

PREFIX = "MAKIMA_"
PHYSICAL_RESOURCE_ID = "makima-parameters"


class RefusedParameters(ValueError):
    """The settings made of the stack's parameters are not valid; the message names each refused one."""


def settings_of(variables: Mapping[str, Any]) -> Settings:
    """``Settings`` built from ``MAKIMA_<SECTION>__<KEY>`` variables (the values take precedence over the
    process's own environment and any ``makima.toml``), or ``RefusedParameters`` naming each problem."""
    sections: dict[str, dict[str, str]] = {}
    for name, value in variables.items():
        if not name.startswith(PREFIX) or "__" not in name:
            raise RefusedParameters(f"{name}: not a MAKIMA_<SECTION>__<KEY> setting")
        section, _, key = name.removeprefix(PREFIX).lower().partition("__")
        sections.setdefault(section, {})[key] = str(value)
    try:
        return Settings(**sections)  # type: ignore[arg-type]  # sections are validated by pydantic
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"[{where}] {error['msg']}")
        raise RefusedParameters("; ".join(problems)) from None


def handle_request(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Answer one custom-resource request (PUT to its ``ResponseURL``); returns the response body."""
    request = CloudFormationCustomResourceEvent(event)
    request_type = str(request.request_type)
    logger.append_keys(request_type=request_type, logical_resource_id=request.logical_resource_id)
    status, reason = SUCCESS, "nothing to remove"
    if request_type in {"Create", "Update"}:
        variables = (request.resource_properties or {}).get("Settings") or {}
        try:
            settings_of(variables)
            reason = f"{len(variables)} settings accepted"
        except RefusedParameters as exc:
            status, reason = FAILED, f"the stack's parameters make settings the functions refuse: {exc}"
            logger.error("parameters refused", extra={"reason": str(exc)})
    elif request_type != "Delete":
        status, reason = FAILED, f"unknown RequestType {request_type!r}"
    body = {
        "Status": status,
        "Reason": reason[:REASON_LIMIT],
        "PhysicalResourceId": request.physical_resource_id or PHYSICAL_RESOURCE_ID,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "NoEcho": False,
        "Data": {},
    }
    send_response(request.response_url, body)
    return body


def make_parameters_check_handler() -> LambdaHandler:
    """The check function's handler, with the observability of every handler."""
    return observed(handle_request, correlation_id_path="RequestId")
