"""The sample events parse with the Powertools parser models the functions use for their sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    ApiGatewayAuthorizerRequestV2,
    APIGatewayProxyEventV2Model,
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
    CloudFormationCustomResourceCreateModel,
    CloudFormationCustomResourceDeleteModel,
    CloudFormationCustomResourceUpdateModel,
    EventBridgeModel,
)
from pydantic import BaseModel

from tests.infra.cfn import ROOT

pytestmark = pytest.mark.infra

EVENTS = ROOT / "events"

MODELS: dict[str, type[BaseModel]] = {
    "authorizer/request.json": ApiGatewayAuthorizerRequestV2,
    "schedule/scheduled.json": EventBridgeModel,
    "schedule/supervisor_timeouts.json": EventBridgeModel,
    "schedule/heartbeat_retention.json": EventBridgeModel,
    "schedule/worktree_retention.json": EventBridgeModel,
    "schedule/stale_detector.json": EventBridgeModel,
    "schedule/outbox_sweeper.json": EventBridgeModel,
    "schedule/backfill.json": EventBridgeModel,
    "eventbridge/published_status_changed.json": EventBridgeModel,
    "eventbridge/monitor_replay.json": EventBridgeModel,
    "eventbridge/monitor_close.json": EventBridgeModel,
    "websocket/connect.json": APIGatewayWebSocketConnectEventModel,
    "websocket/message_filter.json": APIGatewayWebSocketMessageEventModel,
    "websocket/message_ping.json": APIGatewayWebSocketMessageEventModel,
    "websocket/disconnect.json": APIGatewayWebSocketDisconnectEventModel,
    "web/dashboard_page.json": APIGatewayProxyEventV2Model,
    "web/dashboard_file.json": APIGatewayProxyEventV2Model,
    "cloudformation/create.json": CloudFormationCustomResourceCreateModel,
    "cloudformation/update.json": CloudFormationCustomResourceUpdateModel,
    "cloudformation/delete.json": CloudFormationCustomResourceDeleteModel,
}


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_every_sample_event_has_a_model() -> None:
    # Every event file is checked: by their model here, and the HTTP ones (http/, web/) below as well
    others = {str(p.relative_to(EVENTS)) for p in EVENTS.rglob("*.json") if p.parent.name != "http"}
    assert others == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_event_parses(name: str) -> None:
    MODELS[name].model_validate(_load(EVENTS / name))


HTTP_SAMPLES = sorted((EVENTS / "http").glob("*.json")) + sorted((EVENTS / "web").glob("*.json"))
PUBLIC_ROUTES = {"/api/v1/health", "/api/v1/openapi.json", "/dashboard", "/dashboard/{name}"}


@pytest.mark.parametrize("path", HTTP_SAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_http_sample_event_parses(path: Path) -> None:
    # Given an HTTP API (payload 2.0) sample event
    raw = _load(path)
    event = APIGatewayProxyEventV2Model.model_validate(raw)

    # Then its path is the route's with the path parameters filled in, and its body (if any) is JSON
    method, route = event.routeKey.split(" ", 1)
    assert event.requestContext.http.method == method
    expected = route.format(**(event.pathParameters or {}))
    assert event.rawPath == expected == event.requestContext.http.path
    if "body" in raw:
        json.loads(raw["body"])
    public = route in PUBLIC_ROUTES
    assert (event.requestContext.authorizer is None) == public, "authorizer context exactly on private routes"
    assert ("authorization" in event.headers) == (not public)
