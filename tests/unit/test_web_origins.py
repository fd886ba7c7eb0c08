"""Where the dashboard page may send a token, per deployment: the ``[dashboard]`` settings, the page's
``connect-src`` and the origins written into the page (``makima.local.web``; issue 12, defect 2)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from makima.config import DashboardConfig, Settings
from makima.local.web import connect_sources, page_config, render_page, security_headers

pytestmark = pytest.mark.unit

# Everything but connect-src stays as it was.
OTHER_DIRECTIVES = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
]


def directives(csp: str) -> dict[str, str]:
    out = {}
    for part in csp.split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value
    return out


def meta_config(page: str) -> dict[str, object]:
    found = re.search(r'<meta name="makima-dashboard" content="([^"]*)">', page)
    assert found, "the page carries no makima-dashboard meta"
    loaded: dict[str, object] = json.loads(html.unescape(found.group(1)))
    return loaded


def test_unconfigured_the_page_may_connect_to_its_own_origin_only() -> None:
    # Given no [dashboard] settings
    config = DashboardConfig()
    csp = security_headers(config)["Content-Security-Policy"]

    # Then connect-src names only 'self', the other directives are unchanged
    assert directives(csp)["connect-src"] == "'self'"
    assert all(d in csp for d in OTHER_DIRECTIVES), csp
    # and the page is told no other origin
    page = render_page(b"<html><head><title>t</title></head></html>", config)
    assert meta_config(page) == {"api": None, "monitor": None, "apis": [], "monitors": []}
    assert '<base href="/dashboard/">' in page


def test_configured_origins_and_nothing_else_are_allowed() -> None:
    # Given an API and a monitor fixed at deploy time, and an extra API a link may choose
    config = DashboardConfig(
        api_url="https://API.example.com/api/v1/",
        monitor_url="wss://abc.execute-api.eu-west-1.amazonaws.com/live",
        extra_api_urls=["http://127.0.0.1:9000"],
    )
    csp = security_headers(config)["Content-Security-Policy"]

    # Then connect-src is 'self' and exactly those origins (each API's own monitor included)
    assert directives(csp)["connect-src"] == (
        "'self' https://api.example.com http://127.0.0.1:9000 wss://abc.execute-api.eu-west-1.amazonaws.com "
        "wss://api.example.com ws://127.0.0.1:9000"
    )
    assert all(d in csp for d in OTHER_DIRECTIVES), csp
    # And the page is told the same, normalised
    assert meta_config(render_page(b"<head></head>", config)) == {
        "api": "https://api.example.com",
        "monitor": "wss://abc.execute-api.eu-west-1.amazonaws.com/live",
        "apis": ["https://api.example.com", "http://127.0.0.1:9000"],
        "monitors": [
            "wss://abc.execute-api.eu-west-1.amazonaws.com/live",
            "wss://api.example.com/api/v1/contracts/monitor",
            "ws://127.0.0.1:9000/api/v1/contracts/monitor",
        ],
    }


def test_the_aws_deployment_names_its_monitor_only() -> None:
    # Given the web function's environment as the template sets it (the page on the HTTP API's origin)
    config = DashboardConfig(monitor_url="wss://abc123.execute-api.eu-west-1.amazonaws.com/live")

    # Then the API stays the page's own origin, and the monitor's origin is the one other source
    assert connect_sources(config) == ["'self'", "wss://abc123.execute-api.eu-west-1.amazonaws.com"]
    assert page_config(config)["api"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("api_url", "javascript:alert(1)"),
        ("api_url", "wss://api.example.com"),  # a monitor is not an API
        ("api_url", "https://api.example.com; script-src *"),  # would add a directive to the CSP
        ("api_url", "https://evil.example 'unsafe-inline'"),
        ("api_url", "https://user:secret@api.example.com"),
        ("api_url", "https://api.example.com/?api=x"),
        ("api_url", "https://api.example.com/#x"),
        ("api_url", "https://api.example.com:99999"),
        ("monitor_url", "https://monitor.example.com/live"),
        ("monitor_url", "wss://monitor.example.com/live?token=x"),
        ("extra_api_urls", ["https://ok.example.com", "ftp://bad.example.com"]),
        ("extra_monitor_urls", ["wss://a.example.com, b"]),
    ],
)
def test_a_malformed_origin_is_refused_at_start(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        DashboardConfig.model_validate({field: value})


def test_the_origins_come_from_toml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a TOML file with a [dashboard] section
    toml = tmp_path / "makima.toml"
    toml.write_text('[dashboard]\napi_url = "https://api.example.com"\nextra_api_urls = ["https://b.example.com"]\n')
    monkeypatch.setenv("MAKIMA_CONFIG", str(toml))
    assert Settings().dashboard.extra_api_urls == ["https://b.example.com"]

    # When the environment sets some (as the template does: a URL, and lists comma-separated or JSON)
    monkeypatch.setenv("MAKIMA_DASHBOARD__MONITOR_URL", "wss://m.example.com/live/")
    monkeypatch.setenv("MAKIMA_DASHBOARD__EXTRA_API_URLS", "https://c.example.com, https://d.example.com")
    monkeypatch.setenv("MAKIMA_DASHBOARD__EXTRA_MONITOR_URLS", '["wss://e.example.com/live"]')
    dashboard = Settings().dashboard

    # Then the environment wins, the file fills the rest
    assert dashboard.api_url == "https://api.example.com"
    assert dashboard.monitor_url == "wss://m.example.com/live"
    assert dashboard.extra_api_urls == ["https://c.example.com", "https://d.example.com"]
    assert dashboard.extra_monitor_urls == ["wss://e.example.com/live"]

    # And empty values (a template parameter left blank) mean "not configured"
    monkeypatch.setenv("MAKIMA_DASHBOARD__MONITOR_URL", "")
    monkeypatch.setenv("MAKIMA_DASHBOARD__EXTRA_API_URLS", "")
    dashboard = Settings().dashboard
    assert dashboard.monitor_url is None
    assert dashboard.extra_api_urls == []


def test_the_page_script_takes_no_host_from_the_link_unchecked() -> None:
    # The page's script reads its targets from the server's meta and checks the link's against them
    script = (Path(__file__).resolve().parents[2] / "layers/shared/makima/web/dashboard.js").read_text()
    assert 'meta[name="makima-dashboard"]' in script
    assert "allowedApis.indexOf" in script
    assert "allowedMonitors.indexOf" in script
    assert 'params.get("token")' not in script
