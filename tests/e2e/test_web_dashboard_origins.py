"""Where the web dashboard sends a token, proven in headless Chromium (issue 12, defect 2).

A link to the genuine dashboard must not be able to point the page at another host: ``?api=`` and
``?ws=`` may only choose among the origins the server configured, the sign-in form names the host the
token goes to, and the page's ``connect-src`` lists nothing else. An "attacker" HTTP server records
every request it receives (CORS preflights, WebSocket upgrades, even a connection that never forms a
request); the tests prove it receives none. A "partner" server stands for an API on another origin the
deployment did configure: the page must reach it (the CSP lets it through).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser import VIEWPORT
from tests.e2e.conftest import Stack, free_port, start_stack, stop_stack
from tests.e2e.test_web_dashboard import counts_match_api, eventually

if TYPE_CHECKING:
    from makima.config import DashboardConfig

pytestmark = pytest.mark.e2e

# What the partner API answers for the dashboard: enough for the page to draw its figures.
PARTNER_DASHBOARD = {
    "statusCounts": {"active": 7},
    "phaseCounts": {"plan": 7},
    "waitingForInput": [],
    "staleContracts": [],
    "recentEvents": [],
    "resourceUsage": {
        "activeSupervisors": 3,
        "runningTasks": 2,
        "pendingTasks": 1,
        "activeDaemons": 1,
        "totalWorktrees": 4,
    },
}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Recorder:
    """An HTTP server on 127.0.0.1 that records everything it receives and answers like a cooperative
    cross-origin API: preflights allowed, the dashboard JSON, WebSocket upgrades refused (recorded)."""

    server: ThreadingHTTPServer
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> str:
        return "\n".join(f"{r.method} {r.path} {r.headers}" for r in self.requests)


def start_recorder() -> Recorder:
    recorder: Recorder

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            super().setup()
            recorder.connections += 1  # counted before any parsing: a TLS hello or junk counts too

        def parse_request(self) -> bool:
            ok = super().parse_request()
            recorder.requests.append(Seen(self.command or "?", self.path or "?", dict(self.headers or {})))
            return ok

        def _send(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "authorization, accept")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_OPTIONS(self) -> None:
            self._send(204)

        def do_GET(self) -> None:
            if self.headers.get("Upgrade", "").lower() == "websocket":
                self._send(404, b"no monitor here", "text/plain")
            elif self.path.startswith("/api/v1/contracts/dashboard"):
                self._send(200, json.dumps(PARTNER_DASHBOARD).encode())
            elif self.path.startswith("/api/v1/contracts?"):
                self._send(200, b'{"contracts": []}')
            else:
                self._send(404, b'{"error": {"code": "NOT_FOUND", "message": "nothing"}}')

        do_POST = do_GET  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder = Recorder(server)
    threading.Thread(target=server.serve_forever, name="recorder", daemon=True).start()
    return recorder


def recording() -> Iterator[Recorder]:
    recorder = start_recorder()
    try:
        yield recorder
    finally:
        recorder.server.shutdown()
        recorder.server.server_close()


# A host that must hear nothing from the page, and a configured one that may.
attacker = pytest.fixture(recording, name="attacker")
partner = pytest.fixture(recording, name="partner")


@dataclass
class Watched:
    page: Page
    requests: list[str]
    sockets: list[str]
    csp_violations: list[str]
    errors: list[str]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A page whose every request and WebSocket the browser reports is kept, with CSP complaints."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    w = Watched(page, [], [], [], [])
    page.on("request", lambda r: w.requests.append(r.url))
    page.on("websocket", lambda ws: w.sockets.append(ws.url))
    page.on("pageerror", lambda exc: w.errors.append(str(exc)))
    page.on("console", lambda m: w.csp_violations.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        yield w
    finally:
        context.close()
    assert w.errors == [], f"JavaScript errors on the page: {w.errors}"


def crafted_link(base: str, attacker: Recorder) -> str:
    api = quote(attacker.url, safe="")
    ws = quote(f"ws://127.0.0.1:{attacker.port}/x", safe="")
    return f"{base}/dashboard?api={api}&ws={ws}"


def sign_in(page: Page, token: str) -> None:
    page.fill("#login-token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()


def settled(page: Page, attacker: Recorder) -> tuple[bool, str]:
    """Done waiting when the page is live on the monitor, or as soon as the attacker hears anything."""
    state = page.get_attribute("[data-testid=connection]", "data-state")
    return state == "live" or attacker.connections > 0, f"connection {state}"


def test_a_crafted_link_sends_nothing_to_the_host_it_names(stack: Stack, watched: Watched, attacker: Recorder) -> None:
    page = watched.page
    # Given a link to the genuine dashboard that names the attacker as API and monitor
    page.goto(crafted_link(stack.base_url, attacker))

    expect(page.locator("#login")).to_be_visible()
    # (what the form and the warning say is read now, checked once the main claim is settled)
    shown_api = page.get_by_test_id("login-target-api").all_inner_texts()
    shown_monitor = page.get_by_test_id("login-target-monitor").all_inner_texts()
    warnings = page.get_by_test_id("link-warning").all_inner_texts()
    warning_visible = page.get_by_test_id("link-warning").is_visible()

    # When a real token is pasted
    sign_in(page, stack.admin_token)
    eventually(lambda: settled(page, attacker), timeout=15)

    # Then the attacker received nothing at all (no preflight, no request, no WebSocket upgrade)
    assert attacker.connections == 0, f"the attacker heard from the page:\n{attacker.seen()}"
    assert attacker.requests == []
    # and the sign-in form said, in plain text, that the token goes to the genuine API and monitor,
    assert shown_api == [f"{stack.base_url}/api/v1"]
    assert shown_monitor == [stack.base_url.replace("http://", "ws://") + "/api/v1/contracts/monitor"]
    # with a warning naming the hosts the link asked for, which were ignored;
    assert warning_visible
    assert attacker.url in warnings[0]
    assert f"ws://127.0.0.1:{attacker.port}/x" in warnings[0]
    # and the token went to the genuine API: the dashboard shows its numbers, live on its monitor
    eventually(lambda: counts_match_api(page, stack))
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=15_000)
    port = f":{attacker.port}"
    assert [u for u in watched.requests + watched.sockets if port in u] == []
    assert all(u.startswith(stack.base_url) for u in watched.requests), watched.requests
    assert watched.sockets
    assert all(u.startswith(stack.base_url.replace("http", "ws", 1)) for u in watched.sockets)
    assert attacker.connections == 0, f"the attacker heard from the page:\n{attacker.seen()}"


def test_a_token_kept_in_the_tab_is_not_sent_to_a_host_a_later_link_names(
    stack: Stack, watched: Watched, attacker: Recorder
) -> None:
    page = watched.page
    # Given a tab already signed in to the genuine dashboard (the token kept in sessionStorage)
    page.goto(f"{stack.base_url}/dashboard")
    sign_in(page, stack.admin_token)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=15_000)

    # When the same tab follows a crafted link (no paste needed for the kept token to be used)
    page.goto(crafted_link(stack.base_url, attacker))
    expect(page.locator("#app")).to_be_visible()
    eventually(lambda: settled(page, attacker), timeout=15)

    # Then the kept token still goes only to the genuine API, and the link's hosts are named as ignored
    assert attacker.connections == 0, f"the attacker heard from the page:\n{attacker.seen()}"
    eventually(lambda: counts_match_api(page, stack))
    expect(page.get_by_test_id("link-warning")).to_contain_text(attacker.url)
    assert attacker.connections == 0, f"the attacker heard from the page:\n{attacker.seen()}"


def test_a_token_in_the_link_is_ignored_and_leaves_the_address_bar(stack: Stack, watched: Watched) -> None:
    page = watched.page
    # Given a link carrying a token (someone else's, say: it would sign the victim in as them)
    link = f"{stack.base_url}/dashboard?token={stack.admin_token}"
    page.goto(link)

    # Then the page does not sign in with it: the form asks, the token is gone from the address and the tab
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    assert "token=" not in page.url
    assert page.evaluate("sessionStorage.getItem('makima.token')") is None
    expect(page.get_by_test_id("link-warning")).to_contain_text("token")
    # and no request but the navigation itself carried it anywhere
    assert [u for u in watched.requests + watched.sockets if stack.admin_token in u] == [link]


def dashboard_config(**values: Any) -> DashboardConfig:
    from makima.config import DashboardConfig  # imported here: these are the tests of what it adds

    return DashboardConfig(**values)


@dataclass
class PageServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread


def serve_dashboard(config: DashboardConfig) -> PageServer:
    """The dashboard page alone (the local stack's ``mount_dashboard``) on a port of its own."""
    from makima.local.web import mount_dashboard

    app = FastAPI(openapi_url=None)
    mount_dashboard(app, config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard-page", daemon=True)
    thread.start()
    eventually(lambda: (server.started, "the page server did not start"))
    return PageServer(f"http://127.0.0.1:{port}", server, thread)


def test_configured_extra_origins_are_reached_and_others_are_not(
    watched: Watched, partner: Recorder, attacker: Recorder
) -> None:
    # Given a dashboard configured with a partner API and its monitor on other origins
    partner_ws = f"ws://127.0.0.1:{partner.port}/live"
    served = serve_dashboard(dashboard_config(extra_api_urls=[partner.url], extra_monitor_urls=[partner_ws]))
    try:
        csp = httpx.get(f"{served.url}/dashboard").headers["content-security-policy"]
        assert f"connect-src 'self' {partner.url} {partner_ws.removesuffix('/live')};" in csp
        page = watched.page

        # When a link chooses the partner (a configured origin), and a token is pasted
        link = f"{served.url}/dashboard?api={quote(partner.url, safe='')}&ws={quote(partner_ws, safe='')}"
        page.goto(link)
        expect(page.get_by_test_id("login-target-api")).to_have_text(f"{partner.url}/api/v1")
        expect(page.get_by_test_id("login-target-monitor")).to_have_text(partner_ws)
        expect(page.get_by_test_id("link-warning")).to_be_hidden()
        sign_in(page, "mkm_partner_token")

        # Then the page shows the partner's numbers: the CSP let the requests through, token attached
        expect(page.get_by_test_id("kpi-contracts")).to_have_text("7")
        eventually(lambda: (any(r.headers.get("Upgrade") for r in partner.requests), partner.seen()))
        dashboard = [r for r in partner.requests if r.method == "GET" and "/contracts/dashboard" in r.path]
        assert dashboard[0].headers["Authorization"] == "Bearer mkm_partner_token"
        upgrade = next(r for r in partner.requests if r.headers.get("Upgrade", "").lower() == "websocket")
        assert upgrade.path.startswith("/live?token=mkm_partner_token")
        assert watched.csp_violations == []

        # When instead a link names a host that is not configured
        page.goto(crafted_link(served.url, attacker))

        # Then it is ignored with a warning, and the page's own origin is used
        expect(page.get_by_test_id("link-warning")).to_contain_text(attacker.url)
        expect(page.locator("#app")).to_be_visible()  # still signed in (the tab keeps the token)
        eventually(lambda: (any("/dashboard" in u and u.startswith(served.url + "/api") for u in watched.requests), ""))
        assert attacker.connections == 0, attacker.seen()
    finally:
        served.server.should_exit = True
        served.thread.join(timeout=10)


def test_a_configured_api_is_the_default_and_the_form_names_it(watched: Watched, partner: Recorder) -> None:
    # Given a dashboard whose deployment fixes the API and the monitor on other origins
    partner_ws = f"ws://127.0.0.1:{partner.port}/live"
    served = serve_dashboard(dashboard_config(api_url=partner.url, monitor_url=partner_ws))
    try:
        page = watched.page
        # When it is opened with no parameters
        page.goto(f"{served.url}/dashboard")

        # Then the form names the configured hosts, and a token goes there
        expect(page.get_by_test_id("login-target-api")).to_have_text(f"{partner.url}/api/v1")
        expect(page.get_by_test_id("login-target-monitor")).to_have_text(partner_ws)
        sign_in(page, "mkm_partner_token")
        expect(page.get_by_test_id("kpi-contracts")).to_have_text("7")
        assert watched.csp_violations == []
    finally:
        served.server.should_exit = True
        served.thread.join(timeout=10)


def test_makima_dev_serves_the_origins_of_its_settings(stack_dir: Path) -> None:
    # Given `makima dev` with a [dashboard] extra API and monitor in its environment
    settings = {
        "MAKIMA_DASHBOARD__EXTRA_API_URLS": "https://partner.example.com",
        "MAKIMA_DASHBOARD__EXTRA_MONITOR_URLS": "wss://monitor.example.com/live",
    }
    started = start_stack(stack_dir / "pgdata", stack_dir / "stack.log", settings=settings)
    try:
        # When the page is asked for
        page = httpx.get(f"{started.base_url}/dashboard")

        # Then its connect-src is 'self' and those origins (the partner's own monitor included), no more
        connect = [d.strip() for d in page.headers["content-security-policy"].split(";") if "connect-src" in d]
        assert connect == [
            "connect-src 'self' https://partner.example.com wss://monitor.example.com wss://partner.example.com"
        ]
        assert "https://partner.example.com" in page.text  # the page is told them too
    finally:
        stop_stack(started)
    # And the link it prints carries no token (a token in a link is ignored by the page)
    printed = [line for line in started.log.read_text().splitlines() if "dashboard on" in line]
    assert printed == [f"makima: dashboard on {started.base_url}/dashboard (sign in with the token)"]
