"""The dashboard page's headers per deployment, served for real: by the local stack's app
(``makima.local.web.mount_dashboard``) and by the web Lambda function from its environment, the way the
template configures it (issue 12, defect 2: ``connect-src`` lists ``'self'`` and the configured origins
only, for the page and every file of it)."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from makima.config import DashboardConfig, get_settings
from makima.local.web import mount_dashboard
from tests.integration.test_lambda_handlers import FakeContext

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

ROOT = Path(__file__).resolve().parents[2]
PATHS = (
    "/dashboard",
    "/dashboard/",
    "/dashboard/dashboard.js",
    "/dashboard/contracts.js",
    "/dashboard/contract.js",
    "/dashboard/dashboard.css",
    "/dashboard/nope.js",
)
MONITOR = "wss://wxyz987654.execute-api.eu-west-1.amazonaws.com/live"


def connect_src(headers: dict[str, str]) -> str:
    csp = {k.lower(): v for k, v in headers.items()}["content-security-policy"]
    (directive,) = [d.strip() for d in csp.split(";") if d.strip().startswith("connect-src ")]
    return directive.removeprefix("connect-src ")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (DashboardConfig(), "'self'"),
        (DashboardConfig(monitor_url=MONITOR), "'self' wss://wxyz987654.execute-api.eu-west-1.amazonaws.com"),
        (
            DashboardConfig(api_url="https://api.example.com", extra_monitor_urls=["wss://m.example.com:8443/ws"]),
            "'self' https://api.example.com wss://api.example.com wss://m.example.com:8443",
        ),
    ],
)
def test_the_local_stack_serves_each_file_with_the_configured_connect_src(
    config: DashboardConfig, expected: str
) -> None:
    # Given the page's app as the local stack mounts it, with a deployment's [dashboard] settings
    app = FastAPI()
    mount_dashboard(app, config)
    with TestClient(app) as client:
        for path in PATHS:
            # Then the page, each file and even a 404 carry connect-src of 'self' and those origins only
            response = client.get(path)
            assert connect_src(dict(response.headers)) == expected, path
            assert response.headers["referrer-policy"] == "no-referrer"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The settings are read once per process: start and end each test with a fresh read."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def web_handler() -> Any:
    """``functions/web/app.py``'s handler, imported afresh (it builds the app at import, as at cold start)."""
    path = ROOT / "functions" / "web" / "app.py"
    spec = importlib.util.spec_from_file_location("makima_function_web_origins", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def page_event() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / "web" / "dashboard_page.json").read_text())
    return loaded


def test_the_web_function_allows_the_monitor_its_environment_names(environment: pytest.MonkeyPatch) -> None:
    # Given the web function's environment as the template sets it
    environment.setenv("MAKIMA_DASHBOARD__MONITOR_URL", MONITOR)

    # When the page is asked for, on the HTTP API's origin
    response = web_handler()(page_event(), FakeContext())

    # Then its connect-src is the page's own origin (the API) and that monitor, nothing broader
    assert response["statusCode"] == 200
    assert connect_src(response["headers"]) == "'self' wss://wxyz987654.execute-api.eu-west-1.amazonaws.com"
    # and the page is told the monitor
    assert "wss://wxyz987654.execute-api.eu-west-1.amazonaws.com/live" in response["body"]


def test_the_web_function_ignores_a_link_naming_another_host(environment: pytest.MonkeyPatch) -> None:
    # Given the web function with its monitor, asked for the page by a link naming another monitor and API
    environment.setenv("MAKIMA_DASHBOARD__MONITOR_URL", MONITOR)
    event = page_event()
    event["rawQueryString"] = "api=https%3A%2F%2Fevil.example&ws=wss%3A%2F%2Fevil.example%2Fx"
    event["queryStringParameters"] = {"api": "https://evil.example", "ws": "wss://evil.example/x"}

    # When it is served
    response = web_handler()(event, FakeContext())

    # Then nothing of the link reaches the page's headers or its configuration
    assert response["statusCode"] == 200
    assert "evil.example" not in json.dumps(response["headers"])
    assert "evil.example" not in response["body"]


def test_the_web_function_without_configuration_allows_its_own_origin_only(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.delenv("MAKIMA_DASHBOARD__MONITOR_URL", raising=False)
    response = web_handler()(page_event(), FakeContext())
    assert connect_src(response["headers"]) == "'self'"


def test_the_web_function_serves_every_script_and_stylesheet_the_page_names(environment: pytest.MonkeyPatch) -> None:
    """Issue 16 split the page's script into several files: on AWS each must come from the same
    ``/dashboard/{name}`` route, with the page's CSP (script-src 'self' covers them; nothing inline)."""
    # Given the web function, and the page it serves
    environment.setenv("MAKIMA_DASHBOARD__MONITOR_URL", MONITOR)
    handler = web_handler()
    page = handler(page_event(), FakeContext())
    names = re.findall(r'<script src="([^"]+)"', page["body"]) + re.findall(
        r'<link rel="stylesheet" href="([^"]+)"', page["body"]
    )
    assert {"dashboard.js", "contracts.js", "contract.js", "dashboard.css"} <= set(names)
    assert "<script>" not in page["body"]
    for name in names:
        # When each file is asked for the way API Gateway passes it
        event: dict[str, Any] = json.loads((ROOT / "events" / "web" / "dashboard_file.json").read_text())
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/dashboard/{name}"
        event["pathParameters"] = {"name": name}
        response = handler(event, FakeContext())
        # Then it is there, with the page's headers
        assert response["statusCode"] == 200, name
        assert connect_src(response["headers"]) == connect_src(page["headers"]), name
        assert (ROOT / "layers" / "shared" / "makima" / "web" / name).read_text() == response["body"], name
