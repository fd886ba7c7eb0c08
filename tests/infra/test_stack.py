"""What CloudFormation receives: the template after SAM's transform (``translated``, once per session),
held to the production rules of docs/operations.md.

- Every HTTP route reaches its function, through the authorizer unless public; the WebSocket monitor
  has its three routes, the $default route response, and its stage.
- Every function: a log group with the stack's retention, active tracing, the private subnets, and
  a queue for whatever is invoked asynchronously (schedules and EventBridge rules).
- Least privilege, on the generated roles: each function holds exactly the capabilities its code
  uses (derived from the code here, not restated), no wildcard action, no ``Resource: "*"`` outside the
  three AWS managed policies SAM attaches (listed with why).
- The network, the database, RDS Proxy and the secret; migrations before any new code serves.
- Alarms on every function's errors and throttles, every queue's depth, dead supervisors; outputs.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute

from makima.api.deps import get_flags
from makima.config import ContractsConfig, DashboardConfig, DatabaseConfig, MonitorConfig, RateLimitsConfig, Settings
from makima.lambda_support import eventbridge, migrations, scheduled, websocket
from makima.lambda_support import mcp as mcp_lambda
from makima.lambda_support.migrations import DEFAULT_WAIT_SECONDS, RESPONSE_MARGIN_SECONDS, migrations_hash
from makima.lambda_support.observability import NAMESPACE, SERVICE, metrics
from tests.infra.cfn import (
    Template,
    as_list,
    depends_on,
    http_functions,
    http_routes,
    load_template,
    of_type,
    referenced,
    resolve,
    resources_of,
    resources_of_type,
)

pytestmark = pytest.mark.infra


PUBLIC_ROUTES = {
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/{name}"),
}
READS = {"GET", "HEAD", "OPTIONS"}
# The functions that never reach PostgreSQL: the static page, the parameters check (it only validates),
# and the MCP server (its tools call the HTTP API).
NO_DATABASE = {"web", "parameters_check", "mcp"}
# HTTP functions that serve no router of the API: the dashboard page, the MCP server.
NOT_ROUTERS = {"web", "mcp"}
# The logical id suffix of the alias SAM makes for AutoPublishAlias: live (what the HTTP API invokes).
ALIAS = "Aliaslive"
SCHEDULE_JOBS = {
    "supervisor_timeouts": scheduled.supervisor_timeouts,
    "heartbeat_retention": scheduled.heartbeat_retention,
    "worktree_retention": scheduled.worktree_retention,
    "stale_detector": scheduled.stale_detector,
    "outbox_sweeper": scheduled.outbox_sweeper,
    "backfill": scheduled.backfill,
}
# The AWS managed policies SAM attaches to a function's role, the only places a "*" resource may
# appear, and why each needs it.
AWS_MANAGED_POLICIES = {
    # logs:CreateLogGroup/CreateLogStream/PutLogEvents: Lambda writes the function's own log group.
    "service-role/AWSLambdaBasicExecutionRole",
    # xray:PutTraceSegments/PutTelemetryRecords/GetSampling*: X-Ray has no resource-level permissions.
    "AWSXrayWriteOnlyAccess",
    # ec2:CreateNetworkInterface/DescribeNetworkInterfaces/DeleteNetworkInterface...: Lambda's ENIs in
    # the private subnets have no ARN before they exist.
    "service-role/AWSLambdaVPCAccessExecutionRole",
}
# Services whose data a wildcard action would open up, beyond the "no '*' in any action" rule below.
DATA_SERVICES = ("secretsmanager", "rds", "rds-db", "events", "sqs", "sns", "dynamodb", "s3", "execute-api", "kms")


# --- Reading the translated template --------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def folders(raw: Template) -> dict[str, str]:
    """Function logical id -> its folder under functions/."""
    return {
        name: str(fn["Properties"]["CodeUri"]).removeprefix("functions/").rstrip("/")
        for name, fn in resources_of_type(raw, "AWS::Serverless::Function").items()
    }


@pytest.fixture(scope="module")
def functions(translated: Template) -> dict[str, dict[str, Any]]:
    return of_type(translated, "AWS::Lambda::Function")


# --- What the code uses (the expectations are derived, not restated) ---------------------------------------


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for inner in dependant.dependencies:
        yield from _dependants(inner)


def _router_reads_flags(router: APIRouter) -> bool:
    """True when a route of ``router`` evaluates a feature flag (depends on ``makima.api.deps.get_flags``),
    through its own dependencies or the router's."""
    roots = [route.dependant for route in router.routes if isinstance(route, APIRoute)]
    roots += [get_dependant(path="", call=d.dependency) for d in router.dependencies if d.dependency is not None]
    return any(d.call is get_flags for root in roots for d in _dependants(root))


def _router_writes(router: APIRouter) -> bool:
    """True when ``router`` has a non-GET route: makima.api.after_write publishes the outbox after each."""
    return any(set(route.methods or ()) - READS for route in router.routes if isinstance(route, APIRoute))


def _router_revokes_tokens(router: APIRouter) -> bool:
    """A route that hands a revocation to the event sink, whose AWS adapter closes that token's
    monitor connections through the management API."""
    assert "stack_closers" in eventbridge.LambdaEvents.token_revoked.__code__.co_names
    return any(
        # unwrapped: a plain endpoint is registered inside its one-hop wrapper (api/routers/_common.py)
        "token_revoked" in inspect.unwrap(route.endpoint).__code__.co_names
        for route in router.routes
        if isinstance(route, APIRoute)
    )


@pytest.fixture(scope="module")
def expected_capabilities(folders: dict[str, str], raw: Template) -> dict[str, set[str]]:
    """Function logical id -> what its code does that needs a permission."""
    import importlib

    routes = http_routes(raw)
    expected: dict[str, set[str]] = {}
    for name, folder in folders.items():
        caps: set[str] = set()
        if folder not in NO_DATABASE:
            caps.add("read-database-secret")
        if routes[name] and folder not in NOT_ROUTERS:
            router = importlib.import_module(f"makima.api.routers.{folder}").router
            if _router_reads_flags(router):
                caps.add("read-feature-flags")
            if _router_writes(router):
                caps.add(f"publish:{eventbridge.SOURCE}")
            if _router_revokes_tokens(router):
                caps.add("close-monitor-connections")
        if folder in SCHEDULE_JOBS and "_publisher" in SCHEDULE_JOBS[folder].__code__.co_names:
            caps.add(f"publish:{eventbridge.SOURCE}")
        if folder in SCHEDULE_JOBS and "_flags" in SCHEDULE_JOBS[folder].__code__.co_names:
            caps.add("read-feature-flags")
        expected[name] = caps
    # The monitor's routes ask for replays on the bus and never post to connections; the broadcaster
    # posts (events and replays) and publishes nothing.
    monitor_code = websocket._monitor.__code__.co_names
    broadcaster_code = websocket._broadcast.__code__.co_names
    assert "request_replay" in monitor_code
    assert "ManagementApiSender" not in monitor_code
    assert "ManagementApiSender" in broadcaster_code
    assert "EventBridgePublisher" not in broadcaster_code
    expected["MonitorFunction"].add(f"publish:{eventbridge.MONITOR_SOURCE}")
    expected["BroadcasterFunction"].add("manage-monitor-connections")
    # Both ask the monitoring_dashboard flag (the monitor refuses, the broadcaster closes, while it is off)
    for name, code in (("MonitorFunction", monitor_code), ("BroadcasterFunction", broadcaster_code)):
        if "_monitor_disabled" in code:
            expected[name].add("read-feature-flags")
    # The MCP function reads the API's URL (the parameter it is told the name of) at its first request
    assert "get_parameter" in mcp_lambda.parameter_api_url.__code__.co_names
    expected["McpFunction"].add("read-mcp-api-url")
    # The migration function registers the bootstrap admin token (from the secret the template makes)
    assert "ensure_bootstrap_admin" in migrations._deploy.__code__.co_names
    expected["MigrateFunction"].add("read-admin-token")
    # ... and answers the database's deletion protection resource (rds:ModifyDBInstance, that instance)
    if "deletion_protection" in migrations._outcome.__code__.co_names:
        expected["MigrateFunction"].add("protect-database")
    # Sending its failed invocations to its own queue: every function with an on-failure destination
    for name, fn in resources_of_type(raw, "AWS::Serverless::Function").items():
        config = fn["Properties"].get("EventInvokeConfig") or {}
        on_failure = (config.get("DestinationConfig") or {}).get("OnFailure")
        if on_failure:
            expected[name].add(f"send:{on_failure['Destination']['Fn::GetAtt'][0]}")
    return expected


# --- HTTP API ------------------------------------------------------------------------------------------------


def test_every_http_route_reaches_its_function_through_the_authorizer(translated: Template, raw: Template) -> None:
    # Given the HTTP API's OpenAPI body as CloudFormation gets it, and the routes each function declares
    body = resources_of(translated)["HttpApi"]["Properties"]["Body"]
    declared = {route: name for name, routes in http_routes(raw).items() for route in routes}
    scheme = body["components"]["securitySchemes"]["TokenAuthorizer"]["x-amazon-apigateway-authorizer"]

    # Then the authorizer is the AuthorizerFunction's, keyed on the Authorization header, cached 60 s by
    # default (AuthorizerCacheSeconds: test_the_authorizer_cache_is_a_parameter_and_0_turns_it_off)
    assert referenced(scheme["authorizerUri"]) == {"AuthorizerFunction"}
    assert scheme["identitySource"] == ["$request.header.Authorization"]
    assert resolve(scheme["authorizerResultTtlInSeconds"], translated, {}) == 60
    # And every route of the API integrates its function's live alias (what CodeDeploy shifts), behind
    # the authorizer unless public
    served: set[tuple[str, str]] = set()
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            route = (method.upper(), path)
            served.add(route)
            integration = operation["x-amazon-apigateway-integration"]
            assert integration["type"] == "aws_proxy", route
            assert integration["payloadFormatVersion"] == "2.0", route
            assert referenced(integration["uri"]) == {declared[route] + ALIAS}, route
            security: list[dict[str, list[str]]] = (
                [{"NONE": []}] if route in PUBLIC_ROUTES else [{"TokenAuthorizer": []}]
            )
            assert operation["security"] == security, route
    assert served == set(declared)


def test_api_gateway_may_invoke_exactly_the_http_functions(translated: Template, raw: Template) -> None:
    # Given the Lambda permissions CloudFormation creates
    permissions = of_type(translated, "AWS::Lambda::Permission")
    by_principal: dict[str, set[str]] = {}
    for permission in permissions.values():
        props = permission["Properties"]
        assert props["Action"] == "lambda:InvokeFunction"
        assert "SourceArn" in props, "a permission names the API or rule that may invoke"
        by_principal.setdefault(props["Principal"], set()).update(referenced(props["FunctionName"]))

    # Then API Gateway invokes the HTTP functions (their live aliases), the authorizer and the monitor;
    # EventBridge the scheduled functions and the broadcaster; nothing else invokes anything
    http = {name + ALIAS for name in http_functions(raw)}
    assert by_principal.pop("apigateway.amazonaws.com") == http | {"AuthorizerFunction", "MonitorFunction"}
    rule_targets = {
        referenced(target["Arn"]).pop()
        for rule in of_type(translated, "AWS::Events::Rule").values()
        for target in rule["Properties"]["Targets"]
    }
    assert by_principal.pop("events.amazonaws.com") == rule_targets
    assert by_principal == {}


# --- Functions -------------------------------------------------------------------------------------------------


def test_every_function_logs_with_retention_traces_and_runs_in_the_private_subnets(
    translated: Template, functions: dict[str, dict[str, Any]]
) -> None:
    # Given every function CloudFormation creates, and every log group
    groups = of_type(translated, "AWS::Logs::LogGroup")
    by_name = {json.dumps(g["Properties"].get("LogGroupName"), sort_keys=True) for g in groups.values()}
    assert len(functions) >= 20

    for name, fn in functions.items():
        props = fn["Properties"]
        # Then each has /aws/lambda/<function> with the stack's retention ...
        assert json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"}) in by_name, f"{name} has no log group"
        # ... X-Ray tracing on, and the VPC's private subnets behind the functions' security group
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        security = [{"Ref": "FunctionSecurityGroup"}] + (
            [{"Ref": "MigrateSecurityGroup"}] if name == "MigrateFunction" else []
        )
        assert props["VpcConfig"] == {
            "SecurityGroupIds": security,
            "SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
        }, name
    # And every log group of the stack (functions, APIs, database, proxy) keeps the stack's retention
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


def test_asynchronous_invocations_end_in_a_queue(translated: Template, functions: dict[str, dict[str, Any]]) -> None:
    # Given the functions something invokes asynchronously: EventBridge rules' targets (schedules and the
    # bus) and custom resources' service tokens
    resources = resources_of(translated)
    configs = {
        referenced(c["Properties"]["FunctionName"]).pop(): c["Properties"]
        for c in of_type(translated, "AWS::Lambda::EventInvokeConfig").values()
    }
    queues = of_type(translated, "AWS::SQS::Queue")
    policies = of_type(translated, "AWS::SQS::QueuePolicy")
    targets = [
        (rule_name, target)
        for rule_name, rule in of_type(translated, "AWS::Events::Rule").items()
        for target in rule["Properties"]["Targets"]
    ]
    assert {referenced(t["Arn"]).pop() for _, t in targets} == {
        "BroadcasterFunction",
        "SupervisorTimeoutsFunction",
        "HeartbeatRetentionFunction",
        "WorktreeRetentionFunction",
        "StaleDetectorFunction",
        "OutboxSweeperFunction",
        "BackfillFunction",
    }

    for rule_name, target in targets:
        function = referenced(target["Arn"]).pop()
        # Then a failed invocation goes to an SQS queue of the stack (Lambda's on-failure destination),
        # after at most one retry ...
        config = configs[function]
        assert config["MaximumRetryAttempts"] <= 1, function
        queue = referenced(config["DestinationConfig"]["OnFailure"]["Destination"]).pop()
        assert queue in queues, function
        assert queues[queue]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
        # ... and so does an event the rule cannot deliver, which the queue's policy lets in from this
        # rule only
        assert referenced(target["DeadLetterConfig"]["Arn"]) == {queue}, rule_name
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 3600, rule_name
        (policy,) = (p["Properties"] for p in policies.values() if referenced(p["Properties"]["Queues"]) == {queue})
        (statement,) = policy["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert referenced(statement["Resource"]) == {queue}
        assert referenced(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == {rule_name}
    # And the custom resources' functions (migrations, the parameters check), run by CloudFormation, are
    # not retried: CloudFormation waits for one answer (or the ServiceTimeout) and fails the deploy otherwise
    tokens = {
        referenced(r["Properties"]["ServiceToken"]).pop()
        for r in resources.values()
        if r["Type"] == "AWS::CloudFormation::CustomResource" or r["Type"].startswith("Custom::")
    }
    assert tokens == {"MigrateFunction", "ParametersCheckFunction"}
    assert all(configs[token]["MaximumRetryAttempts"] == 0 for token in tokens)
    assert set(configs) == {referenced(t["Arn"]).pop() for _, t in targets} | tokens
    assert set(configs) <= set(functions)


# --- Least privilege -------------------------------------------------------------------------------------------


def _statements(translated: Template, role: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of a role's inline policies and of the stack's managed policies it is given."""
    managed = of_type(translated, "AWS::IAM::ManagedPolicy")
    found = [s for p in role["Properties"].get("Policies", []) for s in as_list(p["PolicyDocument"]["Statement"])]
    for arn in role["Properties"].get("ManagedPolicyArns", []):
        if isinstance(arn, str):
            assert arn.startswith("arn:aws:iam::aws:policy/"), arn
            assert arn.removeprefix("arn:aws:iam::aws:policy/") in AWS_MANAGED_POLICIES, arn
            continue
        (name,) = referenced(arn)
        found += as_list(managed[name]["Properties"]["PolicyDocument"]["Statement"])
    return found


def _capability(statement: dict[str, Any]) -> str:
    """What one statement allows, named as ``expected_capabilities`` names it (and checked exactly)."""
    actions = sorted(as_list(statement["Action"]))
    resources = referenced(statement["Resource"])
    condition = statement.get("Condition")
    if actions == ["secretsmanager:GetSecretValue"] and resources == {"DatabaseSecret"} and not condition:
        return "read-database-secret"
    if actions == ["secretsmanager:GetSecretValue"] and resources == {"AdminTokenSecret"} and not condition:
        return "read-admin-token"
    if actions == ["appconfig:GetLatestConfiguration", "appconfig:StartConfigurationSession"] and not condition:
        assert resources == {"FeatureFlagsApplication", "FeatureFlagsEnvironment", "FeatureFlagsProfile"}
        assert "configuration/${FeatureFlagsProfile.ConfigurationProfileId}" in statement["Resource"]["Fn::Sub"]
        return "read-feature-flags"
    if actions == ["events:PutEvents"] and resources == {"EventBus"}:
        assert statement["Resource"] == {"Fn::GetAtt": ["EventBus", "Arn"]}
        assert condition is not None, "PutEvents is limited to one source"
        (source,) = as_list(condition["StringEquals"]["events:source"])
        return f"publish:{source}"
    if actions == ["execute-api:ManageConnections"] and resources == {"MonitorApi"} and not condition:
        arns = sorted(r["Fn::Sub"] for r in as_list(statement["Resource"]))
        allowed = [a.rsplit(":${MonitorApi}/", 1)[1] for a in arns]
        if allowed == ["live/DELETE/@connections/*"]:
            # Closing the connections only (the admin function, for the tokens it revokes)
            return "close-monitor-connections"
        # Posting to the connections, and deleting them (the broadcaster closes them while the monitor's
        # flag is off, and those of revoked tokens); not reading their details
        assert allowed == ["live/DELETE/@connections/*", "live/POST/@connections/*"]
        return "manage-monitor-connections"
    if actions == ["rds:ModifyDBInstance"] and resources == {"Database"} and not condition:
        # This instance only (its identifier is the Ref of Database), not any instance of the account
        assert statement["Resource"] == {
            "Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:db:${Database}"
        }, statement
        return "protect-database"
    if actions == ["ssm:GetParameter"] and not resources and not condition:
        # One parameter, by its name (the API's URL for the MCP function's tools), not any of the account
        assert statement["Resource"] == {
            "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
            "/${AWS::StackName}/mcp/api-url"
        }, statement
        return "read-mcp-api-url"
    if actions == ["sqs:SendMessage"] and len(resources) == 1 and not condition:
        return f"send:{resources.pop()}"
    raise AssertionError(f"a statement no function should need: {statement}")


def test_each_function_may_do_exactly_what_its_code_does(
    translated: Template, functions: dict[str, dict[str, Any]], expected_capabilities: dict[str, set[str]]
) -> None:
    roles = of_type(translated, "AWS::IAM::Role")
    assert set(expected_capabilities) == set(functions)
    for name, fn in functions.items():
        # Given the role CloudFormation creates for the function
        (role_name,) = referenced(fn["Properties"]["Role"])
        statements = _statements(translated, roles[role_name])

        for statement in statements:
            # Then no statement uses a wildcard action (let alone on a data service), nor "*" as resource
            actions = as_list(statement["Action"])
            assert statement["Effect"] == "Allow", name
            assert not [a for a in actions if "*" in a], f"{name}: wildcard action in {statement}"
            assert not [a for a in actions if a.split(":")[0] in DATA_SERVICES and a.endswith("*")], name
            assert "*" not in as_list(statement["Resource"]), f"{name}: Resource '*' in {statement}"
        # And the statements are exactly the capabilities its code uses
        capabilities = [_capability(s) for s in statements]
        assert len(capabilities) == len(set(capabilities)), f"{name}: a capability granted twice"
        assert set(capabilities) == expected_capabilities[name], name


def test_only_the_broadcaster_posts_and_only_the_publishers_publish(
    expected_capabilities: dict[str, set[str]], folders: dict[str, str]
) -> None:
    # The rules of the issue, as they come out of the code (a restatement, so a change in the code that
    # breaks them shows here by name)
    posting = {n for n, caps in expected_capabilities.items() if "manage-monitor-connections" in caps}
    closing = {n for n, caps in expected_capabilities.items() if "close-monitor-connections" in caps}
    assert closing == {"AdminFunction"}  # revoking a token closes its monitors, and posts nothing
    publishing = {n for n, caps in expected_capabilities.items() if any(c.startswith("publish:") for c in caps)}
    assert posting == {"BroadcasterFunction"}
    assert {"MonitorFunction", "StaleDetectorFunction", "OutboxSweeperFunction", "HeartbeatsFunction"} <= publishing
    assert not publishing & {
        "AuthorizerFunction",
        "HealthFunction",
        "BroadcasterFunction",
        "SupervisorTimeoutsFunction",
        "HeartbeatRetentionFunction",
        "WorktreeRetentionFunction",
        "MigrateFunction",
        "WebFunction",
    }
    assert "publish:makima.monitor" in expected_capabilities["MonitorFunction"]
    assert f"publish:{eventbridge.SOURCE}" not in expected_capabilities["MonitorFunction"]
    assert expected_capabilities["WebFunction"] == set()
    assert "read-feature-flags" not in expected_capabilities["MigrateFunction"]


def test_the_authorizer_cache_is_a_parameter_and_0_turns_it_off(translated: Template, raw: Template) -> None:
    # Given the authorizer as CloudFormation gets it (in the HTTP API's OpenAPI body) and the parameter
    scheme = resources_of(translated)["HttpApi"]["Properties"]["Body"]["components"]["securitySchemes"]
    authorizer = scheme["TokenAuthorizer"]["x-amazon-apigateway-authorizer"]
    parameter = raw["Parameters"]["AuthorizerCacheSeconds"]
    assert parameter["Type"] == "Number"
    assert int(parameter["Default"]) == 60
    assert 0 in [int(v) for v in parameter["AllowedValues"]]
    assert all(0 <= int(v) <= 3600 for v in parameter["AllowedValues"])  # API Gateway's bounds
    for value in parameter["AllowedValues"]:
        # Then each value reaches authorizerResultTtlInSeconds as that integer - 0 included, given
        # explicitly (left out, API Gateway would cache for 300 s) - and not as the string a Ref to a
        # Number parameter would make of it
        ttl = resolve(authorizer["authorizerResultTtlInSeconds"], translated, {"AuthorizerCacheSeconds": str(value)})
        assert type(ttl) is int, (value, ttl)
        assert ttl == int(value)
        # And the identity source stays the Authorization header (the cache key; with the cache off, a
        # request without it is refused without invoking the authorizer)
        assert authorizer["identitySource"] == ["$request.header.Authorization"]


def test_the_proxy_may_read_the_database_secret_and_nothing_else(translated: Template) -> None:
    role = resources_of(translated)["DatabaseProxyRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "rds.amazonaws.com"}
    assert "ManagedPolicyArns" not in role
    (statement,) = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statement == {
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": {"Ref": "DatabaseSecret"},
    }


# --- WebSocket monitor and the event bus -----------------------------------------------------------------------


def test_the_websocket_monitor_routes_integration_and_route_response(translated: Template) -> None:
    # Given the monitor API's routes, integration, route responses and stage
    resources = resources_of(translated)
    (api_name,) = (n for n, r in of_type(translated, "AWS::ApiGatewayV2::Api").items() if n != "HttpApi")
    api = resources[api_name]["Properties"]
    routes = {
        r["Properties"]["RouteKey"]: (name, r["Properties"])
        for name, r in of_type(translated, "AWS::ApiGatewayV2::Route").items()
        if referenced(r["Properties"]["ApiId"]) == {api_name}
    }
    (integration_name,) = of_type(translated, "AWS::ApiGatewayV2::Integration")
    integration = resources[integration_name]["Properties"]

    # Then it is a WebSocket API routing on the message's action, with $connect, $default and
    # $disconnect all on the monitor function's proxy integration
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"
    assert set(routes) == {"$connect", "$default", "$disconnect"}
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert referenced(integration["IntegrationUri"]) == {"MonitorFunction"}
    for key, (_, route) in routes.items():
        assert route["Target"] == {"Fn::Sub": f"integrations/${{{integration_name}}}"}, key
    assert routes["$connect"][1]["AuthorizationType"] == "NONE"  # the function checks ?token=
    # And $default is two-way: the function's answer goes back on the connection
    default_name, default = routes["$default"]
    assert default["RouteResponseSelectionExpression"] == "$default"
    (response,) = of_type(translated, "AWS::ApiGatewayV2::RouteResponse").values()
    assert response["Properties"]["RouteResponseKey"] == "$default"
    assert referenced(response["Properties"]["RouteId"]) == {default_name}
    # And the stage is live, deployed, throttled and logged; API Gateway may invoke the function
    (stage_resource,) = (
        s
        for s in of_type(translated, "AWS::ApiGatewayV2::Stage").values()
        if referenced(s["Properties"]["ApiId"]) == {api_name}
    )
    stage = stage_resource["Properties"]
    assert stage["StageName"] == "live"
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "MonitorThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "MonitorThrottlingBurstLimit"},
    }
    assert "AccessLogSettings" in stage
    assert depends_on(stage_resource) >= {name for name, _ in routes.values()}


def test_the_broadcaster_takes_contract_events_and_replay_requests_from_the_bus(translated: Template) -> None:
    # Given the rules on the stack's bus
    rules = [
        r["Properties"]
        for r in of_type(translated, "AWS::Events::Rule").values()
        if referenced(r["Properties"].get("EventBusName")) == {"EventBus"}
    ]

    # Then exactly one, to the broadcaster, matching both sources the code publishes with
    (rule,) = rules
    (target,) = rule["Targets"]
    assert referenced(target["Arn"]) == {"BroadcasterFunction"}
    assert set(rule["EventPattern"]["source"]) == {eventbridge.SOURCE, eventbridge.MONITOR_SOURCE}
    assert set(rule["EventPattern"]) == {"source"}


# --- Network, database, secret ---------------------------------------------------------------------------------


def test_the_network_private_subnets_endpoints_and_nat(translated: Template) -> None:
    resources = resources_of(translated)
    # Two private subnets in two zones, one public subnet for the NAT gateway
    a, b = resources["PrivateSubnetA"]["Properties"], resources["PrivateSubnetB"]["Properties"]
    assert a["AvailabilityZone"] != b["AvailabilityZone"]
    for subnet in of_type(translated, "AWS::EC2::Subnet").values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
    private_routes = [
        r["Properties"]
        for r in of_type(translated, "AWS::EC2::Route").values()
        if r["Properties"]["RouteTableId"] == {"Ref": "PrivateRouteTable"}
    ]
    assert private_routes == [
        {
            "RouteTableId": {"Ref": "PrivateRouteTable"},
            "DestinationCidrBlock": "0.0.0.0/0",
            "NatGatewayId": {"Ref": "NatGateway"},
        }
    ]
    # Interface endpoints, private DNS on, in both private subnets, for what the functions call: the
    # secret, the flags, the bus. No execute-api endpoint: it cannot reach a WebSocket API's management
    # API (and its private DNS would break public API calls); that goes through the NAT gateway.
    endpoints = {
        r["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]: r["Properties"]
        for r in of_type(translated, "AWS::EC2::VPCEndpoint").values()
    }
    # (and S3 through a gateway endpoint: the custom resources' answers, test_deployment.py)
    assert endpoints.pop("s3")["VpcEndpointType"] == "Gateway"
    assert set(endpoints) == {"secretsmanager", "appconfigdata", "events"}
    for service, endpoint in endpoints.items():
        assert endpoint["VpcEndpointType"] == "Interface", service
        assert endpoint["PrivateDnsEnabled"] is True, service
        assert endpoint["SubnetIds"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}], service


def _rules(translated: Template, group: str, direction: str) -> list[dict[str, Any]]:
    """The ingress or egress rules of a security group: inline and separate resources."""
    resources = resources_of(translated)
    inline = list(resources[group]["Properties"].get(f"SecurityGroup{direction}", []))
    kind = f"AWS::EC2::SecurityGroup{direction}"
    separate = [
        r["Properties"] for r in of_type(translated, kind).values() if r["Properties"]["GroupId"] == {"Ref": group}
    ]
    return inline + separate


def test_security_groups_open_only_the_database_path(translated: Template) -> None:
    def peers(group: str, direction: str) -> set[tuple[int, str]]:
        key = "SourceSecurityGroupId" if direction == "Ingress" else "DestinationSecurityGroupId"
        found = set()
        for rule in _rules(translated, group, direction):
            if rule.get("IpProtocol") == "icmp" and rule.get("CidrIp") == "255.255.255.255/32":
                continue  # the "nothing" rule that replaces the default allow-all egress
            peer = referenced(rule[key]).pop() if key in rule else rule["CidrIp"]
            assert rule["IpProtocol"] == "tcp", rule
            assert rule["FromPort"] == rule["ToPort"], rule
            found.add((int(rule["FromPort"]), peer))
        return found

    # Then PostgreSQL flows functions -> proxy -> database, and migration function -> database, only;
    # HTTPS to the endpoints from the functions and the proxy, and the functions' HTTPS out (the
    # management API through the NAT)
    assert peers("FunctionSecurityGroup", "Ingress") == set()
    assert peers("FunctionSecurityGroup", "Egress") == {(5432, "ProxySecurityGroup"), (443, "0.0.0.0/0")}
    assert peers("ProxySecurityGroup", "Ingress") == {(5432, "FunctionSecurityGroup")}
    assert peers("ProxySecurityGroup", "Egress") == {(5432, "DatabaseSecurityGroup"), (443, "EndpointSecurityGroup")}
    assert peers("DatabaseSecurityGroup", "Ingress") == {(5432, "ProxySecurityGroup"), (5432, "MigrateSecurityGroup")}
    assert peers("MigrateSecurityGroup", "Ingress") == set()
    assert peers("MigrateSecurityGroup", "Egress") == {(5432, "DatabaseSecurityGroup")}
    assert peers("DatabaseSecurityGroup", "Egress") == set()
    assert peers("EndpointSecurityGroup", "Ingress") == {(443, "FunctionSecurityGroup"), (443, "ProxySecurityGroup")}
    assert peers("EndpointSecurityGroup", "Egress") == set()


def test_the_database_its_secret_and_the_proxy(translated: Template, functions: dict[str, dict[str, Any]]) -> None:
    resources = resources_of(translated)
    secret = resources["DatabaseSecret"]["Properties"]["GenerateSecretString"]
    database = resources["Database"]
    db = database["Properties"]
    proxy = resources["DatabaseProxy"]["Properties"]
    target_group = resources["DatabaseProxyTargetGroup"]["Properties"]

    # The secret is generated here in the RDS format runtime.py reads, completed by the attachment
    assert json.loads(secret["SecretStringTemplate"]) == {"username": "makima", "dbname": "makima"}
    assert secret["GenerateStringKey"] == "password"
    assert secret["PasswordLength"] >= 32
    attachment = resources["DatabaseSecretAttachment"]["Properties"]
    assert attachment == {
        "SecretId": {"Ref": "DatabaseSecret"},
        "TargetId": {"Ref": "Database"},
        "TargetType": "AWS::RDS::DBInstance",
    }
    # PostgreSQL 16, private, encrypted, backed up, snapshotted rather than lost; its credentials are
    # the secret's (dynamic references: never in the template or the parameters)
    assert db["Engine"] == "postgres"
    assert db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True
    assert db["BackupRetentionPeriod"] >= 7
    assert database["DeletionPolicy"] == database["UpdateReplacePolicy"] == "Snapshot"
    assert db["MasterUsername"] == {"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecret}:SecretString:username}}"}
    assert db["MasterUserPassword"] == {"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecret}:SecretString:password}}"}
    assert db["DBName"] == "makima"
    assert db["VPCSecurityGroups"] == [{"Ref": "DatabaseSecurityGroup"}]
    # RDS Proxy in front, logging in with the secret, TLS required, the instance its one target
    assert proxy["EngineFamily"] == "POSTGRESQL"
    assert proxy["RequireTLS"] is True
    (auth,) = proxy["Auth"]
    assert auth["AuthScheme"] == "SECRETS"
    assert auth["SecretArn"] == {"Ref": "DatabaseSecret"}
    assert auth["IAMAuth"] == "DISABLED"  # password auth through the secret: no rds-db:connect anywhere
    assert proxy["VpcSecurityGroupIds"] == [{"Ref": "ProxySecurityGroup"}]
    assert target_group["DBInstanceIdentifiers"] == [{"Ref": "Database"}]
    assert referenced(target_group["DBProxyName"]) == {"DatabaseProxy"}
    # And every function is pointed at the proxy and the secret, the migration function at the instance
    # itself (test_deployment.py: migrate's sessions use startup options, which the proxy refuses)
    for name, fn in functions.items():
        env = fn["Properties"]["Environment"]["Variables"]
        host = ["Database", "Endpoint.Address"] if name == "MigrateFunction" else ["DatabaseProxy", "Endpoint"]
        assert env["DB_HOST"] == {"Fn::GetAtt": host}, name
        assert env["DB_SECRET_ARN"] == {"Ref": "DatabaseSecret"}, name


# --- Migrations at deploy --------------------------------------------------------------------------------------


def test_migrations_run_at_deploy_before_any_new_code(
    translated: Template, functions: dict[str, dict[str, Any]]
) -> None:
    resources = resources_of(translated)
    (name,) = of_type(translated, "AWS::CloudFormation::CustomResource")
    migrations = resources[name]
    props = migrations["Properties"]
    layer = next(n for n in of_type(translated, "AWS::Lambda::LayerVersion") if n.startswith("SharedLayer"))

    # The custom resource runs the migration function, and runs it again whenever the migrations
    # (their hash, equal to the files') or the layer they ship in change
    assert props["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    current = migrations_hash()
    assert props["MigrationsHash"] == current, f"a migration changed: set MigrationsHash in template.yaml to {current}"
    assert props["SharedLayer"] == {"Ref": layer}
    # ... or the database time limits it sets on the role
    assert props["StatementTimeoutSeconds"] == {"Ref": "DatabaseStatementTimeoutSeconds"}
    assert props["IdleInTransactionTimeoutSeconds"] == {"Ref": "DatabaseIdleInTransactionTimeoutSeconds"}
    # ... once the database is reachable through the proxy with the attached secret
    assert depends_on(migrations) >= {"DatabaseProxyTargetGroup", "DatabaseSecretAttachment", "SecretsManagerEndpoint"}
    # ... and answers before CloudFormation gives up: it waits for the database at most the
    # function's timeout less the margin it keeps to answer, and CloudFormation waits longer still
    timeout = functions["MigrateFunction"]["Properties"]["Timeout"]
    wait = float(functions["MigrateFunction"]["Properties"]["Environment"]["Variables"]["MAKIMA_MIGRATE_WAIT_SECONDS"])
    assert wait == DEFAULT_WAIT_SECONDS
    assert wait + RESPONSE_MARGIN_SECONDS < timeout <= 900
    assert int(props["ServiceTimeout"]) > timeout
    # And every other function's new code exists only once the migrations are in (the parameters
    # check runs before the database even exists)
    for fn_name, fn in functions.items():
        if fn_name not in {"MigrateFunction", "ParametersCheckFunction"}:
            assert name in depends_on(fn), f"{fn_name} must DependsOn {name}"


def _network_path(t: Template, subnets: set[str]) -> set[str]:
    """The resources a function in ``subnets`` reaches AWS's public endpoints through: the subnets'
    route-table associations, the routes of those tables (and any gateway endpoint on them), and, for a
    route through a NAT gateway, the same for the NAT's own subnet (its route to the internet gateway).
    CloudFormation must not delete any of them before a custom resource served from ``subnets`` answers."""
    resources = resources_of(t)
    path: set[str] = set()
    todo = set(subnets)
    seen: set[str] = set()
    while todo:
        subnet = todo.pop()
        seen.add(subnet)
        for name, association in of_type(t, "AWS::EC2::SubnetRouteTableAssociation").items():
            if referenced(association["Properties"]["SubnetId"]) != {subnet}:
                continue
            path.add(name)
            # (the route table the default parameters choose: zone B's own exists only with NatPerZone)
            (table,) = referenced(resolve(association["Properties"]["RouteTableId"], t, {}))
            for route_name, route in of_type(t, "AWS::EC2::Route").items():
                if referenced(route["Properties"]["RouteTableId"]) == {table}:
                    path.add(route_name)
                    for nat in referenced(route["Properties"].get("NatGatewayId")):
                        todo |= referenced(resources[nat]["Properties"]["SubnetId"]) - seen
            for endpoint_name, endpoint in of_type(t, "AWS::EC2::VPCEndpoint").items():
                if table in referenced(endpoint["Properties"].get("RouteTableIds")):
                    path.add(endpoint_name)
    return path


def test_the_database_can_be_deleted_by_cloudformation_and_is_protected_otherwise(
    translated: Template, raw: Template, functions: dict[str, dict[str, Any]]
) -> None:
    resources = resources_of(translated)
    database = resources["Database"]
    # Given the instance: no deletion protection of its own, so that the rollback of a failed first
    # deploy, and a stack delete, can delete it (leaving its final snapshot)
    assert "DeletionProtection" not in database["Properties"]
    assert database["DeletionPolicy"] == "Snapshot"
    # Then a custom resource of the migration function turns protection on from the parameter (on by
    # default) once the instance exists, and off before CloudFormation deletes it (it depends on it)
    (name,) = (n for n, r in resources.items() if r["Type"] == "Custom::DatabaseDeletionProtection")
    guard = resources[name]
    props = guard["Properties"]
    assert props["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    assert props["DBInstanceIdentifier"] == {"Ref": "Database"}
    assert props["DeletionProtection"] == {"Ref": "DatabaseDeletionProtection"}
    parameter = raw["Parameters"]["DatabaseDeletionProtection"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("true", ["true", "false"])
    assert int(props["ServiceTimeout"]) > functions["MigrateFunction"]["Properties"]["Timeout"]
    # And it answers through the whole network path of the function (RDS's API and the response URL
    # are reached through the NAT gateway or a gateway endpoint): CloudFormation deletes none of it first
    subnets = referenced(functions["MigrateFunction"]["Properties"]["VpcConfig"]["SubnetIds"])
    path = _network_path(translated, subnets)
    assert {"PrivateDefaultRoute", "PublicDefaultRoute"} <= path
    assert depends_on(guard) >= path | {"MigrateFunctionLogGroup"}, path - depends_on(guard)
    # And the function may change that one instance (the only RDS permission of any function)
    roles = of_type(translated, "AWS::IAM::Role")
    for fn_name, fn in functions.items():
        (role_name,) = referenced(fn["Properties"]["Role"])
        rds = [s for s in _statements(translated, roles[role_name]) if "rds:" in json.dumps(s["Action"])]
        if fn_name == "MigrateFunction":
            assert [_capability(s) for s in rds] == ["protect-database"]
        else:
            assert rds == [], fn_name


def test_a_failed_first_deploy_leaves_nothing_behind_but_its_final_snapshot(translated: Template) -> None:
    resources = resources_of(translated)
    # The database secret is kept when the stack is deleted (restoring the final snapshot needs it),
    # but not by the rollback of the create that made it: each failed try would leave one behind
    secret = resources["DatabaseSecret"]
    assert (secret["DeletionPolicy"], secret["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
    # Nothing else is kept past the stack (the instance leaves its final snapshot). (The HTTP functions'
    # published versions are Retain, as SAM makes them for CodeDeploy to shift between; deleting the
    # function deletes them all.)
    kept = {
        n
        for n, r in resources.items()
        if r.get("DeletionPolicy") not in (None, "Delete") and r["Type"] != "AWS::Lambda::Version"
    }
    assert kept == {"DatabaseSecret", "Database"}


# --- Alarms and outputs ----------------------------------------------------------------------------------------


def _alarms(translated: Template) -> list[dict[str, Any]]:
    return [a["Properties"] for a in of_type(translated, "AWS::CloudWatch::Alarm").values()]


def _dimension(alarm: dict[str, Any], name: str) -> Any:
    (value,) = [d["Value"] for d in alarm.get("Dimensions", []) if d["Name"] == name] or [None]
    return value


def test_alarms_on_every_function_queue_and_dead_supervisors(
    translated: Template, functions: dict[str, dict[str, Any]]
) -> None:
    alarms = _alarms(translated)
    for alarm in alarms:
        # Every alarm notifies the topic, firing and clearing
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["OKActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["TreatMissingData"] == "notBreaching"

    def alarmed(namespace: str, metric: str, dimension: str) -> set[str]:
        return {
            referenced(_dimension(a, dimension)).pop()
            for a in alarms
            if a.get("Namespace") == namespace and a.get("MetricName") == metric and _dimension(a, dimension)
        }

    # Errors and throttles of every function, from the first one
    for metric in ("Errors", "Throttles"):
        assert alarmed("AWS/Lambda", metric, "FunctionName") == set(functions), metric
    lambda_alarms = [a for a in alarms if a.get("Namespace") == "AWS/Lambda"]
    for alarm in lambda_alarms:
        assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
            "Sum",
            1,
            "GreaterThanOrEqualToThreshold",
        )
    # Any message in any dead-letter queue
    queues = set(of_type(translated, "AWS::SQS::Queue"))
    assert alarmed("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName") == queues
    # Supervisors marked dead: the EMF metric the supervisor_timeouts job emits, with its dimensions
    assert "SupervisorsMarkedDead" in scheduled.supervisor_timeouts.__code__.co_consts
    metrics.add_metric(name="SupervisorsMarkedDead", unit="Count", value=1)
    try:
        emitted: dict[str, Any] = dict(metrics.serialize_metric_set())
    finally:
        metrics.clear_metrics()
    (directive,) = emitted["_aws"]["CloudWatchMetrics"]
    (dimensions,) = directive["Dimensions"]
    (dead,) = [a for a in alarms if a.get("MetricName") == "SupervisorsMarkedDead"]
    assert dead["Namespace"] == directive["Namespace"] == NAMESPACE
    assert {d["Name"]: d["Value"] for d in dead["Dimensions"]} == {d: emitted[d] for d in dimensions}
    assert emitted["service"] == SERVICE
    assert dead["Threshold"] == {"Ref": "DeadSupervisorsAlarmThreshold"}
    # The HTTP API's 5xx answers
    api_alarms = [a for a in alarms if "Metrics" in a]
    assert any(
        m.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "5xx" for a in api_alarms for m in a["Metrics"]
    )
    # And the topic, with an e-mail subscription when the parameter gives an address
    subscription = resources_of(translated)["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "AlarmTopic"}


def test_outputs(translated: Template) -> None:
    outputs = translated["Outputs"]

    def sub(name: str) -> str:
        return str(outputs[name]["Value"]["Fn::Sub"])

    assert sub("ApiUrl") == "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    assert sub("MonitorUrl") == "wss://${MonitorApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/live"
    # The dashboard page is served by the HTTP API; its link names no host (the function knows the monitor)
    assert sub("DashboardUrl") == f"{sub('ApiUrl')}/dashboard"
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}
    assert outputs["EventBusName"]["Value"] == {"Ref": "EventBus"}
    assert outputs["DatabaseSecretArn"]["Value"] == {"Ref": "DatabaseSecret"}
    # The first admin's token, which the migration function registers
    assert outputs["AdminTokenSecretArn"]["Value"] == {"Ref": "AdminTokenSecret"}
    admin = resources_of(translated)["AdminTokenSecret"]["Properties"]["GenerateSecretString"]
    assert admin["GenerateStringKey"] == "token"
    assert admin["PasswordLength"] >= 32
    migrate_env = resources_of(translated)["MigrateFunction"]["Properties"]["Environment"]["Variables"]
    assert migrate_env["ADMIN_TOKEN_SECRET_ARN"] == {"Ref": "AdminTokenSecret"}
    # Every dead-letter queue's URL, to look at what failed
    for queue in of_type(translated, "AWS::SQS::Queue"):
        assert outputs[f"{queue}Url"]["Value"] == {"Ref": queue}


# --- The [contracts] settings ------------------------------------------------------------------------------------


def test_the_dashboard_page_is_told_its_origins_at_deploy_time(raw: Template, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the web function's environment and the template's parameters
    env = resources_of(raw)["WebFunction"]["Properties"]["Environment"]["Variables"]
    outputs = raw["Outputs"]
    parameters = raw["Parameters"]

    # Then its monitor is this stack's WebSocket API, the very URL of the MonitorUrl output
    assert env["MAKIMA_DASHBOARD__MONITOR_URL"] == outputs["MonitorUrl"]["Value"]
    # and the extra origins are parameters, none by default, every [dashboard] setting covered
    assert env["MAKIMA_DASHBOARD__EXTRA_API_URLS"] == {"Ref": "DashboardExtraApiUrls"}
    assert env["MAKIMA_DASHBOARD__EXTRA_MONITOR_URLS"] == {"Ref": "DashboardExtraMonitorUrls"}
    assert {f"MAKIMA_DASHBOARD__{k.upper()}" for k in DashboardConfig.model_fields} - set(env) == {
        "MAKIMA_DASHBOARD__API_URL"  # the page's own origin: the HTTP API serving it
    }
    assert parameters["DashboardExtraApiUrls"]["Default"] == parameters["DashboardExtraMonitorUrls"]["Default"] == ""

    # And the values the parameters' patterns let through are what the settings accept, to the same origins
    api_pattern = re.compile(parameters["DashboardExtraApiUrls"]["AllowedPattern"])
    monitor_pattern = re.compile(parameters["DashboardExtraMonitorUrls"]["AllowedPattern"])
    apis, monitors = "https://a.example.com,http://10.0.0.5:8000/base", "wss://m.example.com/live"
    assert api_pattern.fullmatch(apis)
    assert monitor_pattern.fullmatch(monitors)
    assert not api_pattern.fullmatch("https://a.example.com; script-src *")
    assert not monitor_pattern.fullmatch("https://m.example.com")
    monkeypatch.setenv("MAKIMA_DASHBOARD__MONITOR_URL", "wss://abc.execute-api.eu-west-1.amazonaws.com/live")
    monkeypatch.setenv("MAKIMA_DASHBOARD__EXTRA_API_URLS", apis)
    monkeypatch.setenv("MAKIMA_DASHBOARD__EXTRA_MONITOR_URLS", monitors)
    dashboard = Settings().dashboard
    assert dashboard.extra_api_urls == ["https://a.example.com", "http://10.0.0.5:8000/base"]
    assert dashboard.extra_monitor_urls == ["wss://m.example.com/live"]


def _parameter_of(setting: str) -> str:
    """``heartbeat_interval_seconds`` -> ``HeartbeatIntervalSeconds``."""
    return "".join(part.capitalize() for part in setting.split("_"))


def test_every_contracts_setting_is_a_parameter_passed_to_every_function(raw: Template) -> None:
    # Given the [contracts] settings, the template's parameters and the functions' common environment
    env = raw["Globals"]["Function"]["Environment"]["Variables"]
    parameters = raw["Parameters"]

    for setting, field in ContractsConfig.model_fields.items():
        # Then each setting is a parameter whose default is the setting's default
        name = _parameter_of(setting)
        assert name in parameters, f"[contracts] {setting} has no parameter"
        parameter = parameters[name]
        if field.annotation is bool:
            assert parameter["Type"] == "String"
            assert parameter["AllowedValues"] == ["true", "false"]
            assert parameter["Default"] == str(field.default).lower()
        else:
            # With the setting's bounds: as MinValue/MaxValue, or values all within them
            assert parameter["Type"] == "Number"
            assert int(parameter["Default"]) == field.default
            bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata}
            if "AllowedValues" in parameter:
                assert all(bounds["Ge"] <= int(v) <= bounds["Le"] for v in parameter["AllowedValues"]), name
            else:
                assert (parameter["MinValue"], parameter["MaxValue"]) == (bounds["Ge"], bounds["Le"]), name
        # And every function reads it from the environment makima.config reads
        assert env[f"MAKIMA_CONTRACTS__{setting.upper()}"] == {"Ref": name}, setting


def test_parameter_values_reach_the_settings(raw: Template, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the environment the template gives the functions, every parameter set away from its default
    chosen = {
        "AutoCompleteEnabled": "false",
        "AutoAdvancePhases": "false",
        "HeartbeatIntervalSeconds": "10",
        "HeartbeatTimeoutSeconds": "45",
        "StaleDetectionIntervalSeconds": "300",
        "StaleThresholdMinutes": "90",
        "SupervisorConversationMaxBytes": "524288",
        "RemovedWorktreeRetentionDays": "30",
    }
    env = raw["Globals"]["Function"]["Environment"]["Variables"]
    monkeypatch.delenv("MAKIMA_CONFIG", raising=False)
    for key, value in env.items():
        if key.startswith("MAKIMA_CONTRACTS__"):
            monkeypatch.setenv(key, chosen[value["Ref"]])

    # Then makima.config reads each of them (the variable names are the ones it reads)
    assert Settings().contracts == ContractsConfig(
        auto_complete_enabled=False,
        auto_advance_phases=False,
        heartbeat_interval_seconds=10,
        heartbeat_timeout_seconds=45,
        stale_detection_interval_seconds=300,
        stale_threshold_minutes=90,
        supervisor_conversation_max_bytes=524288,
        removed_worktree_retention_days=30,
    )


@pytest.mark.parametrize(
    ("section", "config", "prefix"),
    [
        ("rate_limits", RateLimitsConfig, "RateLimits"),
        ("database", DatabaseConfig, "Database"),
        ("monitor", MonitorConfig, "Monitor"),
    ],
)
def test_every_limit_setting_is_a_parameter_passed_to_every_function(
    raw: Template, monkeypatch: pytest.MonkeyPatch, section: str, config: type[Any], prefix: str
) -> None:
    # Given the [rate_limits] and [database] settings, the parameters and the functions' environment
    env = raw["Globals"]["Function"]["Environment"]["Variables"]
    parameters = raw["Parameters"]
    chosen: dict[str, float] = {}
    for setting, field in config.model_fields.items():
        # Then each is a Number parameter whose default and bounds are the setting's
        name = prefix + _parameter_of(setting)
        assert name in parameters, f"[{section}] {setting} has no parameter"
        parameter = parameters[name]
        assert parameter["Type"] == "Number"
        assert float(parameter["Default"]) == field.default
        bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata}
        assert float(parameter["MaxValue"]) == bounds["Le"], name
        assert float(parameter["MinValue"]) == bounds.get("Ge", parameter["MinValue"]), name
        # And every function reads it from the variable makima.config reads
        variable = f"MAKIMA_{section.upper()}__{setting.upper()}"
        assert env[variable] == {"Ref": name}, setting
        chosen[setting] = float(parameter["MaxValue"])
        monkeypatch.setenv(variable, str(parameter["MaxValue"]))
    # And a value set through the environment reaches the settings
    monkeypatch.delenv("MAKIMA_CONFIG", raising=False)
    assert getattr(Settings(), section) == config(**chosen)
