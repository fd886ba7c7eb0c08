"""The web dashboard (``/dashboard`` on the local stack) in headless Chromium, driven by Playwright.

The page must show what ``GET /api/v1/contracts/dashboard`` says, and follow changes made through the
API without a reload, over the WebSocket monitor. Playwright drives Debian's ``chromium`` and never
downloads a browser: without ``/usr/bin/chromium`` these tests are skipped, unless
``MAKIMA_REQUIRE_BROWSER`` is set (``make test``, CI), which makes that a failure.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from playwright.sync_api import (
    Page,
    WebSocketRoute,
    expect,
)

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def open_dashboard(page: Page, stack: Stack, token: str | None = None) -> None:
    """Open the page and sign in through its form (a token in the link is ignored: see
    tests/e2e/test_web_dashboard_origins.py)."""
    page.goto(f"{stack.base_url}/dashboard")
    page.fill("#login-token", token or stack.admin_token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()


def api_dashboard(stack: Stack) -> dict[str, Any]:
    with stack.client() as http:
        response = http.get("/contracts/dashboard")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


def page_counts(page: Page, kind: str) -> dict[str, int]:
    """The counts a chart shows (``kind``: status or phase), zeros left out like the API leaves them."""
    counts: dict[str, int] = page.eval_on_selector_all(
        f"[data-testid={kind}-chart] [data-{kind}]",
        f"els => Object.fromEntries(els.map(e => [e.getAttribute('data-{kind}'), Number(e.dataset.count)]))",
    )
    return {k: v for k, v in counts.items() if v}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def eventually(check: Callable[[], tuple[bool, str]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok, detail = check()
        if ok:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {detail}")
        time.sleep(0.2)


def counts_match_api(page: Page, stack: Stack) -> tuple[bool, str]:
    api = api_dashboard(stack)
    shown = {"status": page_counts(page, "status"), "phase": page_counts(page, "phase")}
    wanted = {"status": nonzero(api["statusCounts"]), "phase": nonzero(api["phaseCounts"])}
    return shown == wanted, f"page {shown} != API {wanted}"


def status_count(page: Page, status: str) -> int:
    return int(page.get_attribute(f"[data-testid=status-chart] [data-status={status}]", "data-count") or 0)


def test_the_page_is_served_without_a_token_and_holds_no_data(stack: Stack) -> None:
    for path in ("/dashboard", "/dashboard/"):
        page = httpx.get(f"{stack.base_url}{path}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<base href="/dashboard/">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "connect-src 'self';" in page.headers["content-security-policy"]  # nothing configured
        assert page.headers["referrer-policy"] == "no-referrer"
    script = httpx.get(f"{stack.base_url}/dashboard/dashboard.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # data reaches the page through textContent only
    assert httpx.get(f"{stack.base_url}/dashboard/dashboard.css").status_code == 200
    assert httpx.get(f"{stack.base_url}/dashboard/nothing.js").status_code == 404
    assert "/dashboard" not in httpx.get(f"{stack.api}/openapi.json").json()["paths"]


def test_the_page_shows_what_the_dashboard_api_says(stack: Stack, page: Page) -> None:
    # Given contracts in a few statuses, one waiting on a question that looks like markup
    question = "<b>Which</b> database? <script>alert(1)</script>"
    with stack.client() as http:
        made = [
            http.post("/contracts", json={"name": f"web page {i}", "contract_type": "simple"}).json() for i in range(3)
        ]
        assert http.post(f"/contracts/{made[0]['id']}/status", json={"status": "paused"}).status_code == 200
        assert http.post(f"/contracts/{made[1]['id']}/status", json={"status": "active"}).status_code == 200
        asked = http.post(f"/contracts/{made[1]['id']}/questions", json={"question": question})
        assert asked.status_code == 201, asked.text

    # When the page is opened and signed in
    open_dashboard(page, stack)

    # Then the token is kept for the tab
    assert page.evaluate("sessionStorage.getItem('makima.token')") == stack.admin_token
    # and the charts, figures and lists show the API's numbers
    eventually(lambda: counts_match_api(page, stack))
    api = api_dashboard(stack)
    for key, value in api["resourceUsage"].items():
        expect(page.get_by_test_id(f"kpi-{key}")).to_have_text(str(value))
    expect(page.get_by_test_id("kpi-contracts")).to_have_text(str(sum(api["statusCounts"].values())))
    waiting = page.locator(f"[data-testid=waiting-list] li[data-contract-id='{made[1]['id']}']")
    expect(waiting).to_contain_text("web page 1")
    expect(waiting).to_contain_text(question)  # as text: nothing in it became markup
    assert waiting.locator("b, script").count() == 0
    assert len(api["waitingForInput"]) == page.locator("[data-testid=waiting-list] li.item").count()
    shown_events = page.eval_on_selector_all(
        "[data-testid=events] li[data-event-id]", "els => els.map(e => e.dataset.eventId)"
    )
    assert {str(e["id"]) for e in api["recentEvents"]} <= set(shown_events)
    times = page.eval_on_selector_all("[data-testid=events] time", "els => els.map(e => e.getAttribute('datetime'))")
    assert times == sorted(times, reverse=True)  # newest first
    expect(
        page.locator(f"[data-testid=events] li[data-contract-id='{made[0]['id']}'] .event-contract").first
    ).to_have_text("web page 0")


def test_the_sign_in_form_refuses_a_bad_token_and_accepts_a_good_one(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.base_url}/dashboard")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-token", "mkm_not_a_token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#app")).to_be_hidden()

    page.fill("#login-token", stack.admin_token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    eventually(lambda: counts_match_api(page, stack))

    page.click("#signout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('makima.token')") is None


def test_a_revoked_token_signs_the_page_out_within_seconds(stack: Stack, page: Page) -> None:
    """Revocation reaches the dashboard tab too: its monitor is closed (4401) and the page signs out
    instead of reconnecting, forgetting the token and the data it showed."""
    # Given the page signed in with a user's token and live on the monitor
    with stack.client(stack.admin_token) as admin:
        user = admin.post("/users", json={"name": f"web-rv-{uuid.uuid4().hex[:8]}", "role": "user"}).json()
        issued = admin.post(f"/users/{user['id']}/tokens", json={"name": "browser"}).json()
    open_dashboard(page, stack, str(issued["token"]))
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=15_000)

    # When an admin revokes that token
    with stack.client(stack.admin_token) as admin:
        assert admin.delete(f"/tokens/{issued['id']}").status_code == 204

    # Then within 5 s the page is back at the sign-in form, saying why, with no token kept
    expect(page.locator("#login")).to_be_visible(timeout=5_000)
    expect(page.locator("#login-error")).to_contain_text("revoked")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('makima.token')") is None


def test_the_page_follows_changes_live_over_the_monitor(stack: Stack, page: Page) -> None:
    # Given the page open and subscribed to the monitor
    open_dashboard(page, stack)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=15_000)
    eventually(lambda: counts_match_api(page, stack))
    page.evaluate("window.__sameDocument = true")
    created_before = status_count(page, "created")
    paused_before = status_count(page, "paused")

    # When a contract is created through the API
    name = "web live <i>not markup</i>"
    with stack.client() as http:
        contract = http.post("/contracts", json={"name": name, "contract_type": "simple"}).json()
    cid = contract["id"]

    # Then its event appears on top of the recent events, and the counts move, without a reload
    created = page.locator(f"[data-testid=events] li[data-type=contract_created][data-contract-id='{cid}']")
    expect(created).to_have_count(1, timeout=10_000)
    expect(created.locator(".event-contract")).to_have_text(name)
    expect(page.locator("[data-testid=status-chart] [data-status=created]")).to_have_attribute(
        "data-count", str(created_before + 1), timeout=10_000
    )

    # When it is paused
    with stack.client() as http:
        paused = http.post(f"/contracts/{cid}/status", json={"status": "paused", "reason": "web test"})
        assert paused.status_code == 200, paused.text

    # Then the status change is the newest event, and the counts follow
    changed = page.locator(f"[data-testid=events] li[data-type=status_changed][data-contract-id='{cid}']")
    expect(changed).to_have_count(1, timeout=10_000)
    expect(changed).to_contain_text("created → paused")
    expect(page.locator("[data-testid=events] li[data-event-id]").first).to_have_attribute("data-contract-id", cid)
    expect(page.locator("[data-testid=status-chart] [data-status=paused]")).to_have_attribute(
        "data-count", str(paused_before + 1), timeout=10_000
    )
    eventually(lambda: counts_match_api(page, stack))
    assert page.evaluate("window.__sameDocument") is True  # the page was never reloaded
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")


def test_the_page_reconnects_and_resumes_from_the_newest_event_it_saw(stack: Stack, page: Page) -> None:
    # Given the page's monitor connections going through a proxy that records both directions
    sockets: list[WebSocketRoute] = []
    sent: list[list[dict[str, Any]]] = []
    received: list[list[dict[str, Any]]] = []

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        up: list[dict[str, Any]] = []
        down: list[dict[str, Any]] = []
        sent.append(up)
        received.append(down)
        sockets.extend([ws, server])

        def to_server(message: str | bytes) -> None:
            up.append(json.loads(message))
            server.send(message)

        def to_page(message: str | bytes) -> None:
            down.append(json.loads(message))
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    page.route_web_socket(re.compile(r".*/api/v1/contracts/monitor\?token=.*"), proxy)
    with stack.client() as http:
        http.post("/contracts", json={"name": "web seen", "contract_type": "simple"}).raise_for_status()
    open_dashboard(page, stack)
    connection = page.get_by_test_id("connection")
    expect(connection).to_have_attribute("data-state", "live", timeout=15_000)
    # (the first subscription already resumes after the dashboard's newest event: nothing falls in between)
    assert sent[0][0] == {"include_stale": True, "include_heartbeats": False, "last_event_id": ANY}
    assert sent[0][0]["last_event_id"].isdigit()
    assert received[0][0]["type"] == "subscribed"
    eventually(lambda: counts_match_api(page, stack))
    page.wait_for_timeout(1_000)  # the re-fetch that follows a subscription has come and gone
    ids = page.eval_on_selector_all("[data-testid=events] li[data-event-id]", "els => els.map(e => e.dataset.eventId)")
    newest = max(int(i) for i in ids if i.isdigit())

    # When the connection drops, and a contract is created while the page is not connected
    server_side = sockets[-1]
    sockets[-2].close(code=1012, reason="restart")
    server_side.close(code=1012, reason="restart")
    expect(connection).to_have_attribute("data-state", "reconnecting", timeout=5_000)
    with stack.client() as http:
        missed = http.post("/contracts", json={"name": "web missed", "contract_type": "simple"}).json()

    # Then the page reconnects by itself, resuming after the newest event it had seen,
    expect(connection).to_have_attribute("data-state", "live", timeout=15_000)
    assert len(sent) == 2
    assert sent[1][0] == {"include_stale": True, "include_heartbeats": False, "last_event_id": str(newest)}
    # the server replays what it missed, and the page shows it
    replayed = [m for m in received[1] if m.get("type") == "contract_created"]
    assert [m["contract_id"] for m in replayed] == [missed["id"]]
    events = page.locator(f"[data-testid=events] li[data-type=contract_created][data-contract-id='{missed['id']}']")
    expect(events).to_have_count(1)
    eventually(lambda: counts_match_api(page, stack))


def test_a_reload_answer_refetches_the_dashboard_and_the_next_resume_starts_at_the_head(
    stack: Stack, page: Page
) -> None:
    # Given the page's monitor answered by a stand-in server, which the test tells what to say
    sockets: list[WebSocketRoute] = []
    sent: list[dict[str, Any]] = []

    def fake(ws: WebSocketRoute) -> None:
        sockets.append(ws)

        def answer(message: str | bytes) -> None:
            sent.append(json.loads(message))
            ws.send(json.dumps({"type": "subscribed", "filter": {}, "resuming": True}))

        ws.on_message(answer)

    page.route_web_socket(re.compile(r".*/api/v1/contracts/monitor\?token=.*"), fake)
    open_dashboard(page, stack)
    connection = page.get_by_test_id("connection")
    expect(connection).to_have_attribute("data-state", "live", timeout=15_000)
    eventually(lambda: counts_match_api(page, stack))
    page.wait_for_timeout(1_000)  # the re-fetch that follows a subscription has come and gone

    # And a contract created that the page hears nothing of
    with stack.client() as http:
        http.post("/contracts", json={"name": "web reload", "contract_type": "simple"}).raise_for_status()
    page.wait_for_timeout(1_500)
    assert not counts_match_api(page, stack)[0]

    # When the monitor says the replay was cut short
    sockets[-1].send(json.dumps({"type": "reload", "reason": "deadline", "count": 0, "last_event_id": "987654321"}))

    # Then the page fetches the dashboard again, and stays live
    eventually(lambda: counts_match_api(page, stack))
    expect(connection).to_have_attribute("data-state", "live")
    # And once the connection drops, it resumes from the head the server named
    sockets[-1].close(code=1012, reason="restart")
    expect(connection).not_to_have_attribute("data-state", "live", timeout=5_000)
    for _ in range(75):  # Playwright dispatches the route's callbacks while it is called, not in a sleep
        if len(sent) == 2:
            break
        page.wait_for_timeout(200)
    assert len(sent) == 2, sent
    assert sent[1]["last_event_id"] == "987654321"
