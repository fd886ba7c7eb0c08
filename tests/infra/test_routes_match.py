"""The template's HTTP API routes are the FastAPI route table: the same set, split by router.

Each function in ``functions/<name>/`` serves the router ``makima.api.routers.<name>``; its HttpApi
events must name exactly that router's routes (the health function also serves the OpenAPI document).
``functions/web`` serves the web dashboard page (``makima.local.web``) at ``/dashboard``. Every route but
health, the OpenAPI document and the dashboard page goes through the Lambda authorizer.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from makima.api.app import OPENAPI_URL, create_app
from makima.api.errors import method_not_allowed
from makima.api.routers import ALL_ROUTERS
from makima.config import FeatureFlagsConfig
from makima.flags import flag_document
from makima.lambda_support.runtime import CONTAINER_DATABASE
from makima.lambda_support.web import make_dashboard_app
from tests.infra.cfn import ROOT, load_template, resources_of_type

pytestmark = pytest.mark.infra

Routes = set[tuple[str, str]]

PREFIX = "/api/v1"
# The web dashboard page's function and routes: the page's own routes but its trailing-slash alias,
# which an HTTP API route cannot express (the page is linked without it).
WEB_FOLDER = "web"
DASHBOARD_ROUTES: Routes = {("GET", "/dashboard"), ("GET", "/dashboard/{name}")}
# The MCP function (makima.lambda_support.mcp): the MCP server's one path, not a router of the API.
MCP_FOLDER = "mcp"
MCP_ROUTES: Routes = {("POST", "/mcp"), ("GET", "/mcp"), ("DELETE", "/mcp")}
PUBLIC_ROUTES: Routes = {("GET", f"{PREFIX}/health"), ("GET", OPENAPI_URL), *DASHBOARD_ROUTES}
FUNCTIONS_DIR = ROOT / "functions"


def _routes(routes: list[BaseRoute]) -> Routes:
    """(METHOD, path) of every API route: under /api/v1, and /metrics. ``iter_route_contexts`` expands included routers
    (FastAPI keeps them as lazy ``_IncludedRouter`` entries in ``app.routes``, not as ``APIRoute``s)."""
    found: Routes = set()
    for route in iter_route_contexts(routes):
        path = route.path
        if path is None or not (path.startswith(PREFIX) or path == "/metrics"):
            continue
        if path.startswith(f"{PREFIX}/docs"):
            continue  # Swagger UI: a local convenience, not part of the deployed API
        if not getattr(route, "include_in_schema", True) and getattr(route, "endpoint", None) is method_not_allowed:
            # a literal path's 405 guard (api/errors.py): on AWS its request reaches the function through
            # the parameterised route it would otherwise fall into, which answers the same 405
            continue
        found |= {(method, path) for method in route.methods or () if method != "HEAD"}
    return found


def _router_of(folder: str) -> APIRouter:
    router = importlib.import_module(f"makima.api.routers.{folder}").router
    assert isinstance(router, APIRouter)
    return router


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "AWS::Serverless::Function")


@pytest.fixture(scope="module")
def http_events(functions: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Function logical id -> its HttpApi events (name -> properties)."""
    return {
        name: {
            ev_name: ev["Properties"]
            for ev_name, ev in (fn["Properties"].get("Events") or {}).items()
            if ev["Type"] == "HttpApi"
        }
        for name, fn in functions.items()
    }


def _folder(function: dict[str, Any]) -> str:
    code_uri = str(function["Properties"]["CodeUri"])
    assert code_uri.startswith("functions/"), code_uri
    assert code_uri.endswith("/"), code_uri
    return code_uri.removeprefix("functions/").rstrip("/")


def _template_routes(events: dict[str, dict[str, Any]]) -> Routes:
    return {(str(p["Method"]).upper(), str(p["Path"])) for p in events.values()}


def test_template_routes_are_the_fastapi_routes(
    functions: dict[str, dict[str, Any]], http_events: dict[str, dict[str, dict[str, Any]]]
) -> None:
    # Given every HttpApi event of the template's API functions, and the whole app's route table
    template_routes: Routes = set()
    for name, events in http_events.items():
        if _folder(functions[name]) in (WEB_FOLDER, MCP_FOLDER):
            continue
        routes = _template_routes(events)
        assert not routes & template_routes, f"routes served by two functions: {routes & template_routes}"
        template_routes |= routes
    app_routes = _routes(create_app(CONTAINER_DATABASE, routers=ALL_ROUTERS).routes)

    # Then they are the same set, the OpenAPI document included
    assert len(app_routes) > len(ALL_ROUTERS), "the route table came out (nearly) empty"
    assert ("GET", OPENAPI_URL) in app_routes
    assert template_routes - app_routes == set(), "in the template but not in FastAPI"
    assert app_routes - template_routes == set(), "in FastAPI but not in the template"


def test_each_function_serves_exactly_its_router(
    functions: dict[str, dict[str, Any]], http_events: dict[str, dict[str, dict[str, Any]]]
) -> None:
    # Given the HTTP API functions of the template (all with HttpApi events but the dashboard page's)
    folders = {_folder(fn): name for name, fn in functions.items() if http_events[name]}
    folders.pop(WEB_FOLDER)
    folders.pop(MCP_FOLDER)

    # Then there is one per router of ALL_ROUTERS, named after its module
    assert {id(_router_of(folder)) for folder in folders} == {id(r) for r in ALL_ROUTERS}
    assert len(folders) == len(ALL_ROUTERS)
    # And each one's events are its router's routes (health adds the OpenAPI document)
    for folder, name in folders.items():
        expected = _routes(_router_of(folder).routes)
        if folder == "health":
            expected.add(("GET", OPENAPI_URL))
        assert _template_routes(http_events[name]) == expected, name


def test_the_web_function_serves_the_dashboard_page(
    functions: dict[str, dict[str, Any]], http_events: dict[str, dict[str, dict[str, Any]]]
) -> None:
    # Given the dashboard page's function and the routes of the page's app (local stack and Lambda)
    (name,) = (n for n, fn in functions.items() if _folder(fn) == WEB_FOLDER)
    page_routes = {
        (method, route.path)
        for route in make_dashboard_app().routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
        if method != "HEAD"
    }

    # Then its events are the page's routes (but the trailing-slash alias), and no other function's
    assert _template_routes(http_events[name]) == DASHBOARD_ROUTES
    assert page_routes - {("GET", "/dashboard/")} == DASHBOARD_ROUTES
    others = {r for n, events in http_events.items() if n != name for r in _template_routes(events)}
    assert not others & DASHBOARD_ROUTES


def test_the_mcp_function_serves_mcp_behind_the_authorizer_and_calls_this_stacks_api(
    template: dict[str, Any],
    functions: dict[str, dict[str, Any]],
    http_events: dict[str, dict[str, dict[str, Any]]],
) -> None:
    # Given the MCP function, its layer, its API URL parameter and the policy that reads it
    from makima.lambda_support.mcp import API_URL_PARAMETER, LAMBDA_MAX_WAIT_SECONDS

    (name,) = (n for n, fn in functions.items() if _folder(fn) == MCP_FOLDER)
    props = functions[name]["Properties"]
    resources = template["Resources"]
    default = resources["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"]

    # Then it serves /mcp, POST, GET and DELETE, on the HTTP API, through the API's authorizer
    assert _template_routes(http_events[name]) == MCP_ROUTES
    for ev_name, ev in http_events[name].items():
        assert ev["ApiId"] == {"Ref": "HttpApi"}, ev_name
        assert (ev.get("Auth") or {}).get("Authorizer", default) == default, ev_name
    others = {r for n, events in http_events.items() if n != name for r in _template_routes(events)}
    assert not others & MCP_ROUTES
    # And its tools' one destination is this stack's own API: the parameter the function is told the
    # name of holds the HttpApi's URL, the very value of the ApiUrl output (never anything of a request)
    (parameter,) = (r for r in resources.values() if r["Type"] == "AWS::SSM::Parameter")
    env = props["Environment"]["Variables"]
    assert env[API_URL_PARAMETER] == parameter["Properties"]["Name"] == {"Fn::Sub": "/${AWS::StackName}/mcp/api-url"}
    assert parameter["Properties"]["Value"] == template["Outputs"]["ApiUrl"]["Value"]
    assert parameter["Properties"]["Value"] == {
        "Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    }
    # ... which it may read, that one parameter, and nothing else of SSM
    (policy,) = props["Policies"]
    (statement,) = resources[policy["Ref"]]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "ssm:GetParameter"
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${AWS::StackName}/mcp/api-url"
    }
    # And a waiting tool call ends well within the function's timeout (itself under API Gateway's 30 s):
    # the cap leaves at least 10 s for asking the question, the last poll and a cold start
    timeout = props.get("Timeout", template["Globals"]["Function"]["Timeout"])
    assert LAMBDA_MAX_WAIT_SECONDS + 10 <= timeout <= 29
    # And the MCP SDK comes in its own layer, on top of the shared one, for this function only
    assert props["Layers"] == [{"Ref": "McpLayer"}]
    assert all("Layers" not in fn["Properties"] for n, fn in functions.items() if n != name)
    assert resources["McpLayer"]["Properties"]["ContentUri"] == "layers/mcp/"


def test_function_folders_match_the_template(functions: dict[str, dict[str, Any]]) -> None:
    # Given the folders under functions/ and the functions of the template
    on_disk = {p.parent.name for p in FUNCTIONS_DIR.glob("*/app.py")}
    in_template = {_folder(fn) for fn in functions.values()}

    # Then each folder is deployed, and each function is a thin app.py whose handler is app.handler
    assert on_disk == in_template
    assert "authorizer" in on_disk
    for name, fn in functions.items():
        assert fn["Properties"]["Handler"] == "app.handler", name
        source = (FUNCTIONS_DIR / _folder(fn) / "app.py").read_text(encoding="utf-8")
        code = [line for line in source.splitlines() if line.strip() and not line.startswith(('"""', "#"))]
        assert len(code) <= 4, f"{name}: a handler module stays thin ({len(code)} lines of code)"


def test_every_route_but_the_public_ones_uses_the_authorizer(
    template: dict[str, Any], http_events: dict[str, dict[str, dict[str, Any]]]
) -> None:
    # Given the HTTP API and its Lambda authorizer
    apis = resources_of_type(template, "AWS::Serverless::HttpApi")
    assert list(apis) == ["HttpApi"]
    auth = apis["HttpApi"]["Properties"]["Auth"]
    default = auth["DefaultAuthorizer"]
    authorizer = auth["Authorizers"][default]

    # Then the authorizer is the AuthorizerFunction: payload 2.0, simple responses, keyed on the token
    assert authorizer["FunctionArn"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    assert str(authorizer["AuthorizerPayloadFormatVersion"]) == "2.0"
    assert authorizer["EnableSimpleResponses"] is True
    assert authorizer["EnableFunctionDefaultPermissions"] is True
    assert authorizer["Identity"]["Headers"] == ["Authorization"]
    # And every event is on this API, public exactly for health and the OpenAPI document
    for name, events in http_events.items():
        for ev_name, props in events.items():
            assert props["ApiId"] == {"Ref": "HttpApi"}, f"{name}.{ev_name}"
            route = (str(props["Method"]).upper(), str(props["Path"]))
            chosen = (props.get("Auth") or {}).get("Authorizer", default)
            if route in PUBLIC_ROUTES:
                assert chosen == "NONE", f"{route} must be public"
            else:
                assert chosen == default, f"{route} must use the authorizer"


def test_every_function_has_a_log_group_with_retention(
    template: dict[str, Any], functions: dict[str, dict[str, Any]]
) -> None:
    # Given the log groups of the template
    groups = resources_of_type(template, "AWS::Logs::LogGroup")
    named = {json.dumps(g["Properties"].get("LogGroupName"), sort_keys=True): g for g in groups.values()}

    # Then each function has /aws/lambda/<function> with the stack's retention, and so does every group
    for name in functions:
        group = named.get(json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"}))
        assert group is not None, f"{name} has no log group"
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_globals_and_layer(template: dict[str, Any], functions: dict[str, dict[str, Any]]) -> None:
    # Given the template's parameters, globals and layer
    params = template["Parameters"]
    glob = template["Globals"]["Function"]
    layer = template["Resources"]["SharedLayer"]

    # Then the runtime is a parameter (default 3.12) that the layer is built for as well
    assert params["Runtime"]["Default"] == "python3.12"
    assert set(params["Runtime"]["AllowedValues"]) == {"python3.11", "python3.12", "python3.13"}
    assert glob["Runtime"] == {"Ref": "Runtime"}
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert layer["Metadata"]["BuildMethod"] == {"Ref": "Runtime"}
    assert glob["Layers"] == [{"Ref": "SharedLayer"}]
    assert glob["Tracing"] == "Active"
    assert glob["Timeout"] <= 29, "API Gateway stops waiting after 29-30 s"
    env = glob["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "makima-contracts"
    # And every function finds the stack's database: its secret, the host replaced by the RDS Proxy
    # endpoint, from the private subnets (tests/infra/test_stack.py checks what each may do with them)
    assert env["DB_SECRET_ARN"] == {"Ref": "DatabaseSecret"}
    assert env["DB_HOST"] == {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}
    assert env["EVENT_BUS_NAME"] == {"Ref": "EventBus"}
    assert glob["VpcConfig"] == {
        "SecurityGroupIds": [{"Ref": "FunctionSecurityGroup"}],
        "SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
    }
    # (the migration function adds the group that reaches the instance itself: test_deployment.py)
    for name, fn in functions.items():
        own = fn["Properties"].get("VpcConfig")
        if name == "MigrateFunction":
            assert own == {"SecurityGroupIds": [{"Ref": "MigrateSecurityGroup"}]}
        else:
            assert own is None, f"{name} must keep the global VpcConfig"
    assert "ApiUrl" in template["Outputs"]


def test_feature_flags_deploy_the_local_defaults(template: dict[str, Any]) -> None:
    # Given the AppConfig document the stack deploys, and the flags' local defaults
    version = template["Resources"]["FeatureFlagsVersion"]["Properties"]
    deployed = json.loads(version["Content"])

    # Then they agree, and the functions are told where the flags are
    assert version["ContentType"] == "application/json"
    assert deployed == flag_document(FeatureFlagsConfig())
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["APPCONFIG_APPLICATION"] == {"Fn::GetAtt": ["FeatureFlagsApplication", "ApplicationId"]}
    assert env["APPCONFIG_ENVIRONMENT"] == {"Fn::GetAtt": ["FeatureFlagsEnvironment", "EnvironmentId"]}
    assert env["APPCONFIG_PROFILE"] == {"Fn::GetAtt": ["FeatureFlagsProfile", "ConfigurationProfileId"]}


def test_sample_events_cover_every_route_once(
    functions: dict[str, dict[str, Any]], http_events: dict[str, dict[str, dict[str, Any]]]
) -> None:
    # Given the HTTP sample events (the API's under http/, the dashboard page's under web/), keyed by the
    # route they are for
    by_route: dict[tuple[str, str], list[str]] = {}
    samples = sorted((ROOT / "events" / "http").glob("*.json")) + sorted((ROOT / "events" / "web").glob("*.json"))
    for path in samples:
        event = json.loads(path.read_text(encoding="utf-8"))
        method, route = event["routeKey"].split(" ", 1)
        assert event["requestContext"]["http"]["method"] == method, path.name
        by_route.setdefault((method, route), []).append(path.name)
    folder_of = {
        route: _folder(functions[name]) for name, events in http_events.items() for route in _template_routes(events)
    }

    # Then every route has exactly one, named <function folder>_<operation>.json (web/dashboard_*.json
    # for the page)
    assert set(by_route) == set(folder_of)
    for route, files in by_route.items():
        assert len(files) == 1, f"{route}: {files}"
        prefix = "dashboard_" if folder_of[route] == WEB_FOLDER else f"{folder_of[route]}_"
        assert files[0].startswith(prefix), f"{files[0]} is not named after {folder_of[route]}"
