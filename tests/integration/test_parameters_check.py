"""The parameters check (``functions/parameters_check``), run as CloudFormation runs it: the custom
resource's properties as the template resolves them for chosen parameter values, the answer PUT to a
local HTTP server standing in for the pre-signed S3 ``ResponseURL``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.cfn import load_template
from tests.integration.cfn_response import ResponseEndpoint
from tests.integration.test_lambda_handlers import FakeContext, handler_of, load_event

pytestmark = [pytest.mark.filterwarnings("ignore:No application metrics to publish")]


def settings_property(**chosen: str) -> dict[str, str]:
    """``ParametersCheck``'s ``Settings`` as CloudFormation resolves it: each ``Ref`` to a parameter is the
    value chosen for it, else the parameter's default."""
    template = load_template()
    parameters = template["Parameters"]
    unknown = set(chosen) - set(parameters)
    assert not unknown, unknown
    resolved = {}
    for variable, value in template["Resources"]["ParametersCheck"]["Properties"]["Settings"].items():
        name = value["Ref"]
        resolved[variable] = str(chosen.get(name, parameters[name]["Default"]))
    return resolved


def check(kind: str, endpoint: ResponseEndpoint, settings: dict[str, str] | None = None) -> dict[str, Any]:
    event = load_event(f"cloudformation/{kind}")
    event["LogicalResourceId"] = "ParametersCheck"
    event["ResourceType"] = "Custom::ParametersCheck"
    event["ResponseURL"] = f"{endpoint.url}/response/{kind}?X-Amz-Signature=abc"
    properties: dict[str, Any] = {"ServiceToken": event["ServiceToken"]}
    if settings is not None:
        properties["Settings"] = settings
    event["ResourceProperties"] = properties
    handler_of("parameters_check")(event, FakeContext())
    answer: dict[str, Any] = endpoint.only().body
    return answer


def test_the_default_parameters_pass(endpoint: ResponseEndpoint) -> None:
    # Given the template's defaults, When CloudFormation creates the check
    answer = check("create", endpoint, settings_property())

    # Then it answers SUCCESS for its one physical resource
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == "makima-parameters"
    assert answer["LogicalResourceId"] == "ParametersCheck"


@pytest.mark.parametrize("kind", ["create", "update"])
def test_a_combination_the_functions_refuse_fails_the_deploy_with_the_reason(
    endpoint: ResponseEndpoint, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a heartbeat timeout shorter than two intervals (each value within its parameter's own bounds),
    # and a process environment that says otherwise (the values asked about are what counts)
    monkeypatch.setenv("MAKIMA_CONTRACTS__HEARTBEAT_TIMEOUT_SECONDS", "600")
    settings = settings_property(HeartbeatIntervalSeconds="60", HeartbeatTimeoutSeconds="90")

    # When CloudFormation creates or updates the check
    answer = check(kind, endpoint, settings)

    # Then the deploy fails here, saying which settings and why
    assert answer["Status"] == "FAILED"
    assert "[contracts]" in answer["Reason"]
    assert "heartbeat_timeout_seconds must be at least twice heartbeat_interval_seconds" in answer["Reason"]


def test_a_url_the_dashboard_refuses_fails_the_deploy(endpoint: ResponseEndpoint) -> None:
    # Given an extra monitor URL the parameter's pattern lets through but the settings refuse (a port
    # out of range)
    settings = settings_property(DashboardExtraMonitorUrls="wss://monitor.example.com:99999/live")

    answer = check("create", endpoint, settings)

    assert answer["Status"] == "FAILED"
    assert "[dashboard.extra_monitor_urls" in answer["Reason"], answer["Reason"]


def test_delete_succeeds_without_looking(endpoint: ResponseEndpoint) -> None:
    # Given a Delete (after a failed create, the properties may be the refused ones)
    answer = check("delete", endpoint, settings_property(HeartbeatIntervalSeconds="60", HeartbeatTimeoutSeconds="90"))

    assert answer["Status"] == "SUCCESS"
