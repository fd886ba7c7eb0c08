"""The web console in headless Chromium (Playwright, Debian's chromium): the contract list, a contract's
page and every action an owner takes there, end to end against the running stack, the API's state checked
after each; the 409 path; live updates; deep links; and axe-core's accessibility check (no serious or
critical violation), in light and dark mode and on a phone-sized screen.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.e2e.axe import AxeUnavailable
from tests.e2e.axe import fetch as fetch_axe
from tests.e2e.browser import VIEWPORT
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

FILES = ("dashboard.js", "contracts.js", "contract.js")


def sign_in(page: Page, stack: Stack, fragment: str = "") -> None:
    """Open the page at ``#fragment`` and sign in through its form."""
    page.goto(f"{stack.base_url}/dashboard{'#' + fragment if fragment else ''}")
    page.fill("#login-token", stack.admin_token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()


def open_contract(page: Page, stack: Stack, contract: dict[str, Any], query: str = "") -> None:
    sign_in(page, stack, f"/contracts/{contract['id']}{query}")
    expect(page.get_by_test_id("contract-name")).to_have_text(contract["name"])


def make(http: httpx.Client, name: str, contract_type: str = "specification", **extra: Any) -> dict[str, Any]:
    made = http.post("/contracts", json={"name": name, "contract_type": contract_type, **extra})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def get(http: httpx.Client, suffix: str) -> Any:
    response = http.get(suffix)
    assert response.status_code == 200, response.text
    return response.json()


def beat(http: httpx.Client, cid: str, task_id: str, progress: int, state: str = "working") -> None:
    response = http.post(
        f"/contracts/{cid}/supervisor/heartbeat",
        json={
            "task_id": task_id,
            "state": state,
            "phase": "research",
            "progress": progress,
            "current_activity": f"step {progress}",
            "timestamp": datetime.now(UTC).isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"], response.text


def with_supervisor(http: httpx.Client, name: str, **extra: Any) -> tuple[dict[str, Any], str]:
    contract = make(http, name, **extra)
    started = http.post(f"/contracts/{contract['id']}/supervisor", json={})
    assert started.status_code == 201, started.text
    return started.json()["contract"], str(started.json()["supervisor"]["task_id"])


def confirm_dialog(page: Page, reason: str | None = None) -> None:
    dialog = page.get_by_test_id("dialog")
    expect(dialog).to_be_visible()
    if reason is not None:
        page.fill("#dialog-reason", reason)
    page.click("#dialog-ok")
    expect(dialog).to_be_hidden()


def quiet_monitor(page: Page) -> None:
    """Answer the page's monitor with a stand-in that subscribes and then says nothing: the page keeps
    what it loaded, as a page does whose owner has not looked for a while."""

    def fake(ws: WebSocketRoute) -> None:
        ws.on_message(lambda _: ws.send('{"type": "subscribed", "filter": {}, "resuming": false}'))

    page.route_web_socket("**/api/v1/contracts/monitor?token=*", fake)


# --- serving -----------------------------------------------------------------------------------------------


def test_every_script_of_the_page_is_served_with_the_pages_headers(stack: Stack) -> None:
    page = httpx.get(f"{stack.base_url}/dashboard")
    for name in FILES:
        assert f'<script src="{name}" defer></script>' in page.text
        script = httpx.get(f"{stack.base_url}/dashboard/{name}")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.headers["content-security-policy"] == page.headers["content-security-policy"]
        assert "innerHTML" not in script.text  # data reaches the page through textContent only
    assert "<script>" not in page.text  # no inline script: the CSP forbids it anyway


# --- the list --------------------------------------------------------------------------------------------


def test_the_list_searches_filters_sorts_pages_and_follows_changes(stack: Stack, page: Page) -> None:
    # Given 27 contracts of one batch (two types), one of them paused and the latest active (a message)
    tag = f"lst-{uuid.uuid4().hex[:6]}"
    with stack.client() as http:
        made = [make(http, f"{tag} {i:02}", "simple" if i % 3 == 0 else "specification") for i in range(27)]
        paused = http.post(f"/contracts/{made[4]['id']}/status", json={"status": "paused"})
        assert paused.status_code == 200, paused.text
        http.post(f"/contracts/{made[4]['id']}/messages", json={"content": "news"}).raise_for_status()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/contracts?" in r.url else None)

    # When the list is opened from a link that searches for the batch
    sign_in(page, stack, f"/contracts?q={tag}")
    rows = page.locator("[data-testid=contracts-table] tbody tr[data-contract-id]")

    # Then it shows them 25 a page, the most recently active first, as the API searched and sorted them
    expect(page.get_by_test_id("contracts-count")).to_have_text("Contracts 1\u201325, more on the next page")
    expect(rows).to_have_count(25)
    expect(page.get_by_test_id("page-info")).to_have_text("Page 1")
    expect(rows.first).to_have_attribute("data-contract-id", made[4]["id"])
    expect(page.locator("#th-activity")).to_have_attribute("aria-sort", "descending")
    assert any(f"q={tag}" in u and "sort=activity" in u and "limit=25" in u for u in asked), asked
    # And the next page is the API's, from the first page's cursor
    page.click("#page-next")
    expect(rows).to_have_count(2)
    expect(page.get_by_test_id("contracts-count")).to_have_text("Contracts 26\u201327 of 27")
    expect(page.get_by_test_id("page-info")).to_have_text("Page 2 of 2")
    assert "page=2" in page.url
    assert "cursor=" in asked[-1], asked[-1]
    page.click("#page-prev")
    expect(rows).to_have_count(25)
    expect(rows.first).to_have_attribute("data-contract-id", made[4]["id"])

    # When filtered by status and by type (both in the API)
    page.select_option("#f-status", "paused")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"{tag} 04")
    assert "status=paused" in page.url
    page.select_option("#f-status", "")
    page.select_option("#f-type", "simple")
    expect(page.get_by_test_id("contracts-count")).to_have_text("9 contracts")
    assert "contract_type=simple" in asked[-1], asked[-1]
    page.select_option("#f-type", "")
    # And sorted by creation, newest first (the paused one was created fifth)
    page.select_option("#f-sort", "created")
    expect(rows.first).to_contain_text(f"{tag} 26")
    expect(page.locator("#th-activity")).not_to_have_attribute("aria-sort", "descending")
    assert "sort=created" in page.url
    page.select_option("#f-sort", "activity")
    # And a narrower search, typed
    page.fill("#f-q", f"{tag} 1")
    expect(rows).to_have_count(10)
    expect(page.get_by_test_id("contracts-count")).to_have_text("10 contracts")
    page.fill("#f-q", tag)
    expect(rows).to_have_count(25)

    # When another contract of the batch is created and one is resumed, through the API
    with stack.client() as http:
        late = make(http, f"{tag} late")
        assert http.post(f"/contracts/{made[4]['id']}/status", json={"status": "active"}).status_code == 200

    # Then the list follows without a reload: the new one and the resumed one on the first page
    expect(page.locator(f"tr[data-contract-id='{late['id']}']")).to_be_visible(timeout=10_000)
    expect(page.locator(f"tr[data-contract-id='{made[4]['id']}']")).to_have_attribute("data-status", "active")

    # And a row's link opens the contract's page
    page.click(f"tr[data-contract-id='{late['id']}'] a")
    expect(page.get_by_test_id("contract-name")).to_have_text(f"{tag} late")
    assert page.url.endswith(f"#/contracts/{late['id']}")


def test_a_link_to_a_later_page_walks_to_it(stack: Stack, page: Page) -> None:
    # Given 30 contracts of one batch
    tag = f"pg-{uuid.uuid4().hex[:6]}"
    with stack.client() as http:
        made = [make(http, f"{tag} {i:02}", "simple") for i in range(30)]
    # When a link to their second page, newest first, is opened
    sign_in(page, stack, f"/contracts?q={tag}&sort=created&page=2")
    rows = page.locator("[data-testid=contracts-table] tbody tr[data-contract-id]")
    # Then it shows the five oldest, and a link past the end shows the last page
    expect(rows).to_have_count(5)
    expect(rows.first).to_have_attribute("data-contract-id", made[4]["id"])
    expect(page.get_by_test_id("page-info")).to_have_text("Page 2 of 2")
    page.goto(f"{stack.base_url}/dashboard#/contracts?q={tag}&sort=created&page=7")
    expect(page).to_have_url(f"{stack.base_url}/dashboard#/contracts?q={tag}&sort=created&page=2")
    expect(page.get_by_test_id("page-info")).to_have_text("Page 2 of 2")
    expect(rows).to_have_count(5)


# --- the contract page ----------------------------------------------------------------------------------


def test_a_deep_link_shows_the_whole_contract_and_follows_it_live(stack: Stack, page: Page) -> None:
    # Given a guarded contract with a supervisor that beat twice, a task, a question answered and one
    # pending, a deliverable done and a chat message
    with stack.client() as http:
        contract, sup = with_supervisor(http, f"page-{uuid.uuid4().hex[:6]} <b>not markup</b>", phase_guard=True)
        cid = contract["id"]
        beat(http, cid, sup, 10)
        beat(http, cid, sup, 30)
        task = http.post(f"/contracts/{cid}/tasks", json={"name": "collect sources", "daemon": "laptop"}).json()
        first = http.post(f"/contracts/{cid}/questions", json={"question": "Old question?"}).json()
        http.post(f"/contracts/{cid}/questions/{first['id']}/answer", json={"answer": "yes"}).raise_for_status()
        pending = http.post(f"/contracts/{cid}/questions", json={"question": "Which <i>database</i>?"}).json()
        done = http.post(f"/contracts/{cid}/deliverables", json={"deliverable_id": "research-notes"})
        assert done.status_code == 200, done.text
        http.post(f"/contracts/{cid}/messages", json={"content": "Hello supervisor"}).raise_for_status()
        current = get(http, f"/contracts/{cid}")

    # When its link is opened (before signing in)
    open_contract(page, stack, current)
    page.evaluate("window.__sameDocument = true")

    # Then the header names type, status, phase, version and guard
    expect(page.get_by_test_id("fact-type")).to_have_text("specification")
    expect(page.get_by_test_id("fact-status")).to_contain_text("waiting for input")
    expect(page.get_by_test_id("fact-version")).to_have_text(str(current["version"]))
    expect(page.get_by_test_id("fact-guard")).to_contain_text("on")
    phases = page.locator("[data-testid=contract-phases] li")
    expect(phases).to_have_count(5)
    expect(page.locator("[data-testid=contract-phases] li[aria-current=step]")).to_have_attribute(
        "data-phase", "research"
    )
    assert page.locator("[data-testid=contract-name] b").count() == 0  # the name stayed text
    # every phase's deliverables, with completion
    expect(page.locator("[data-testid=deliverables] .phase-block")).to_have_count(5)
    expect(page.locator("[data-deliverable=research-notes]").first).to_have_attribute("data-completed", "true")
    # the task with its status and daemon, questions pending first, the chat
    task_row = page.locator(f"[data-testid=tasks] tr[data-task-id='{task['id']}']")
    expect(task_row).to_contain_text("collect sources")
    expect(task_row).to_contain_text("laptop")
    questions = page.locator("[data-testid=questions] li[data-question-id]")
    expect(questions).to_have_count(2)
    expect(questions.first).to_have_attribute("data-question-id", pending["id"])
    expect(questions.first).to_contain_text("Which <i>database</i>?")
    expect(questions.nth(1)).to_contain_text("yes")
    expect(page.get_by_test_id("chat")).to_contain_text("Hello supervisor")
    # the supervisor, live, with its two heartbeats on the chart
    expect(page.get_by_test_id("fact-supervisor-state")).to_have_text("working")
    expect(page.get_by_test_id("supervisor-liveness")).to_have_text("alive")
    expect(page.get_by_test_id("fact-supervisor-generation")).to_have_text("1")
    points = page.locator("[data-testid=heartbeat-chart] circle.hb-point")
    expect(points).to_have_count(2)
    # and the timeline
    expect(page.locator("[data-testid=timeline] li[data-type=question_asked]")).to_have_count(2)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=15_000)

    # When the supervisor beats again and someone pauses the contract, through the API
    with stack.client() as http:
        beat(http, cid, sup, 55, state="waiting_for_user")
        changed = http.post(f"/contracts/{cid}/status", json={"status": "paused", "reason": "from elsewhere"})
        assert changed.status_code == 200, changed.text

    # Then the page follows without a reload: the chart, the supervisor, the status, the timeline
    expect(points).to_have_count(3, timeout=10_000)
    expect(points.last).to_have_attribute("data-progress", "55")
    expect(page.get_by_test_id("fact-supervisor-state")).to_have_text("waiting for user")
    expect(page.get_by_test_id("fact-supervisor-progress")).to_contain_text("55%")
    expect(page.get_by_test_id("fact-status")).to_contain_text("paused", timeout=10_000)
    expect(page.locator("[data-testid=timeline] li[data-type=status_changed]").first).to_contain_text("from elsewhere")
    expect(page.get_by_test_id("action-resume")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True

    # And back on the dashboard the monitor watches the whole fleet again (the narrowing is undone)
    page.click("[data-nav=dashboard]")
    with stack.client() as http:
        other = make(http, "after the page")
    expect(page.locator(f"[data-testid=events] li[data-contract-id='{other['id']}']")).to_have_count(1, timeout=10_000)


def test_the_dashboards_stale_list_links_to_the_contract_page(stack: Stack, page: Page) -> None:
    # Given a contract idle for two hours (aged under the API)
    with stack.client() as http:
        contract = make(http, f"stale-{uuid.uuid4().hex[:6]}")
        assert http.post(f"/contracts/{contract['id']}/status", json={"status": "active"}).status_code == 200
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - interval '2 hours' WHERE id = %s", (contract["id"],)
        )

    # When the owner follows it from the dashboard's stale list
    sign_in(page, stack)
    page.click(f"[data-testid=stale-list] li[data-contract-id='{contract['id']}'] a")

    # Then its page opens, in the same document
    expect(page.get_by_test_id("contract-name")).to_have_text(contract["name"])
    expect(page.locator("[data-nav=contracts]")).to_have_attribute("aria-current", "page")
    assert page.url.endswith(f"/dashboard#/contracts/{contract['id']}")


def test_a_link_to_an_unknown_contract_says_so(stack: Stack, page: Page) -> None:
    sign_in(page, stack, f"/contracts/{uuid.uuid4()}")
    expect(page.get_by_test_id("contract-error")).to_contain_text("No contract")


# --- actions ----------------------------------------------------------------------------------------------


def test_waiting_for_input_opens_the_answer_box_and_the_answer_reaches_the_api(stack: Stack, page: Page) -> None:
    # Given a contract waiting on a question
    with stack.client() as http:
        contract = make(http, f"answer-{uuid.uuid4().hex[:6]}")
        assert http.post(f"/contracts/{contract['id']}/status", json={"status": "active"}).status_code == 200
        question = http.post(
            f"/contracts/{contract['id']}/questions",
            json={"question": "Postgres or SQLite?", "options": ["Postgres", "SQLite"]},
        ).json()

    # When the owner follows it from the dashboard's "Waiting for input" list
    sign_in(page, stack)
    page.click(f"[data-testid=waiting-list] li[data-contract-id='{contract['id']}'] a")

    # Then the contract's page opens with the answer box ready, focused
    box = page.get_by_test_id("answer-input")
    expect(box).to_be_focused()
    assert f"#/contracts/{contract['id']}" in page.url

    # When an option is picked, completed on the keyboard and sent with Enter on the button
    page.get_by_role("button", name="Postgres", exact=True).click()
    box.press("End")
    box.press_sequentially(", version 16")
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("answer-cancel")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("answer-send")).to_be_focused()
    page.keyboard.press("Enter")

    # Then the API has the answer, the contract works again, and the page shows it answered
    expect(page.get_by_test_id("action-result")).to_have_text("Answer sent.")
    with stack.client() as http:
        answered = get(http, f"/contracts/{contract['id']}/questions")["questions"][0]
        assert (answered["status"], answered["answer"]) == ("answered", "Postgres, version 16")
        assert get(http, f"/contracts/{contract['id']}")["status"] == "active"
    expect(page.locator(f"li[data-question-id='{question['id']}']")).to_have_attribute("data-status", "answered")


def test_pause_with_a_reason_and_resume(stack: Stack, page: Page) -> None:
    with stack.client() as http:
        contract = make(http, f"pause-{uuid.uuid4().hex[:6]}")
    open_contract(page, stack, contract)

    # When paused with a reason (the dialog asks first; Cancel changes nothing)
    page.get_by_test_id("action-pause").click()
    page.click("#dialog-cancel")
    with stack.client() as http:
        assert get(http, f"/contracts/{contract['id']}")["status"] == "created"
    page.get_by_test_id("action-pause").click()
    confirm_dialog(page, reason="waiting for the design review")

    # Then the API has it paused, the reason in its event
    expect(page.get_by_test_id("action-result")).to_have_text("Paused.")
    with stack.client() as http:
        now = get(http, f"/contracts/{contract['id']}")
        assert now["status"] == "paused"
        changes = [
            e for e in get(http, f"/contracts/{contract['id']}/events")["events"] if e["type"] == "status_changed"
        ]
        assert changes[-1]["payload"]["reason"] == "waiting for the design review"
    expect(page.get_by_test_id("fact-version")).to_have_text(str(now["version"]))

    # When resumed
    page.get_by_test_id("action-resume").click()
    expect(page.get_by_test_id("action-result")).to_have_text("Resumed.")
    with stack.client() as http:
        assert get(http, f"/contracts/{contract['id']}")["status"] == "active"


def test_the_phase_guard_held_move_is_confirmed_with_the_deliverables_the_409_carries(stack: Stack, page: Page) -> None:
    # Given a guarded contract whose research phase is done: the guard holds the move to specify
    with stack.client() as http:
        contract, _ = with_supervisor(http, f"guard-{uuid.uuid4().hex[:6]}", phase_guard=True)
        cid = contract["id"]
        tid = http.post(f"/contracts/{cid}/tasks", json={"name": "research-work"}).json()["id"]
        http.post(f"/contracts/{cid}/deliverables", json={"deliverable_id": "research-notes"}).raise_for_status()
        http.post(f"/contracts/{cid}/tasks/{tid}/status", json={"status": "completed"}).raise_for_status()
        held = get(http, f"/contracts/{cid}")
        assert held["waiting_for"] == "phase_confirmation:specify"

    # When its page is opened from the waiting list's link
    open_contract(page, stack, held, "?answer=1")

    # Then the held move is shown with the phase's deliverables, its button focused
    panel = page.get_by_test_id("guard-held")
    expect(panel).to_contain_text("specify")
    expect(panel.locator("[data-deliverable=research-notes]")).to_be_visible()
    expect(page.get_by_test_id("guard-confirm")).to_be_focused()

    # When confirmed: the API's 409 PHASE_GUARD_REQUIRED brings the deliverables into the dialog
    page.get_by_test_id("guard-confirm").click()
    dialog = page.get_by_test_id("dialog")
    expect(dialog).to_contain_text("1 of 1 deliverables of research are done")
    expect(dialog.locator("#dialog-items li")).to_have_count(1)
    expect(dialog.locator("#dialog-items li")).to_contain_text("Research notes")
    confirm_dialog(page)

    # Then the API has moved it on, working again
    expect(page.get_by_test_id("action-result")).to_have_text("Moved to specify.")
    with stack.client() as http:
        now = get(http, f"/contracts/{cid}")
        assert (now["phase"], now["status"]) == ("specify", "active")
    expect(page.locator("[data-testid=contract-phases] li[aria-current=step]")).to_have_attribute(
        "data-phase", "specify"
    )
    expect(page.get_by_test_id("guard-held")).to_be_hidden()


def test_mark_a_deliverable_toggle_auto_complete_advance_and_restart(stack: Stack, page: Page) -> None:
    # Given an unguarded contract with a supervisor and a task still running (its research gate unmet)
    with stack.client() as http:
        contract, _ = with_supervisor(http, f"acts-{uuid.uuid4().hex[:6]}")
        cid = contract["id"]
        http.post(f"/contracts/{cid}/tasks", json={"name": "research-work"}).raise_for_status()
    open_contract(page, stack, contract)

    # When a deliverable is marked done
    page.get_by_test_id("mark-research-notes").click()
    confirm_dialog(page)
    expect(page.get_by_test_id("action-result")).to_have_text("Research notes marked done.")
    with stack.client() as http:
        research = get(http, f"/contracts/{cid}/deliverables")["phases"][0]
        assert research["deliverables"][0] == {**research["deliverables"][0], "id": "research-notes", "completed": True}
    expect(page.locator("[data-testid=deliverables] [data-deliverable=research-notes]")).to_have_attribute(
        "data-completed", "true"
    )

    # When auto-complete is switched off
    switch = page.get_by_test_id("action-auto-complete")
    expect(switch).to_have_attribute("aria-checked", "true")
    switch.click()
    confirm_dialog(page)
    expect(page.get_by_test_id("action-auto-complete")).to_have_attribute("aria-checked", "false")
    with stack.client() as http:
        assert get(http, f"/contracts/{cid}")["auto_complete_enabled"] is False

    # When advanced a phase: the research gate wants its task work done, so the page lists what is
    # missing and the owner moves anyway (force)
    page.get_by_test_id("action-advance").click()
    expect(page.get_by_test_id("dialog")).to_contain_text("1 of 1 deliverables done")
    # the API's refusal reopens the same <dialog> at once: it may never be seen hidden in between
    page.click("#dialog-ok")
    expect(page.get_by_test_id("dialog")).to_contain_text("not met")
    confirm_dialog(page)
    expect(page.get_by_test_id("action-result")).to_have_text("Moved to specify.")
    with stack.client() as http:
        assert get(http, f"/contracts/{cid}")["phase"] == "specify"
        forced = [e for e in get(http, f"/contracts/{cid}/events")["events"] if e["type"] == "phase_changed"]
        assert forced[-1]["payload"]["forced"] is True

    # When moved back to research, from the other-phases menu (a person's override: the API lists why not)
    page.select_option("#move-phase", "research")
    page.get_by_test_id("action-move").click()
    expect(page.get_by_test_id("dialog")).to_contain_text("Move to research?")
    page.click("#dialog-ok")
    expect(page.get_by_test_id("dialog")).to_contain_text("not met")
    confirm_dialog(page)
    expect(page.get_by_test_id("action-result")).to_have_text("Moved to research.")
    with stack.client() as http:
        assert get(http, f"/contracts/{cid}")["phase"] == "research"

    # When the owner writes to the supervisor
    page.fill("#chat-input", "Please keep the notes short")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_test_id("chat")).to_contain_text("Please keep the notes short")
    with stack.client() as http:
        messages = get(http, f"/contracts/{cid}/messages")["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [("user", "Please keep the notes short")]

    # When the supervisor is restarted, with a reason
    page.get_by_test_id("action-restart").click()
    confirm_dialog(page, reason="stuck on a tool call")
    expect(page.get_by_test_id("action-result")).to_have_text("Restart asked for.")
    with stack.client() as http:
        events = get(http, f"/contracts/{cid}/events")["events"]
        restarts = [e for e in events if e["type"] == "supervisor_restart_requested"]
        assert [e["payload"]["reason"] for e in restarts] == ["stuck on a tool call"]


def test_a_change_made_meanwhile_is_shown_never_overwritten(stack: Stack, page: Page) -> None:
    # Given the page open on a contract, its monitor silent (the page keeps what it loaded)
    quiet_monitor(page)
    with stack.client() as http:
        contract = make(http, f"conflict-{uuid.uuid4().hex[:6]}")
        cid = contract["id"]
    open_contract(page, stack, contract)
    expect(page.get_by_test_id("fact-version")).to_have_text(str(contract["version"]))

    # When someone else changes it meanwhile
    with stack.client() as http:
        moved = http.post(f"/contracts/{cid}/status", json={"status": "active", "reason": "someone else"})
        assert moved.status_code == 200, moved.text
        theirs = moved.json()

    # And the owner pauses from the stale page (expected_version: what the page showed)
    page.get_by_test_id("action-pause").click()
    confirm_dialog(page, reason="mine")

    # Then the 409 is shown as a change made since it was loaded, with the new state
    notice = page.get_by_test_id("conflict")
    expect(notice).to_contain_text("Changed since you loaded it")
    expect(notice).to_contain_text(f"version {theirs['version']}")
    expect(notice).to_contain_text("status active")
    expect(notice).to_be_focused()
    # nothing was overwritten, and the page now shows the new state
    with stack.client() as http:
        now = get(http, f"/contracts/{cid}")
        assert (now["status"], now["version"]) == ("active", theirs["version"])
    expect(page.get_by_test_id("fact-version")).to_have_text(str(theirs["version"]))

    # When it changes again, and the owner toggles auto-complete (with expected_version, as every action)
    with stack.client() as http:
        again = http.post(f"/contracts/{cid}/status", json={"status": "paused"}).json()
    page.get_by_test_id("action-auto-complete").click()
    confirm_dialog(page)

    # Then the API refused it (409): the same notice, and no change made
    expect(notice).to_contain_text(f"version {again['version']}")
    with stack.client() as http:
        assert get(http, f"/contracts/{cid}")["auto_complete_enabled"] is True


def test_an_answer_to_a_contract_changed_meanwhile_is_refused_and_kept_to_send_again(stack: Stack, page: Page) -> None:
    # Given the page open on a contract waiting for its question's answer, its monitor silent
    quiet_monitor(page)
    with stack.client() as http:
        contract, _ = with_supervisor(http, f"stale-answer-{uuid.uuid4().hex[:6]}")
        cid = contract["id"]
        question = http.post(f"/contracts/{cid}/questions", json={"question": "Which region?"}).json()
        seen = get(http, f"/contracts/{cid}")
    open_contract(page, stack, seen, f"?answer={question['id']}")
    expect(page.get_by_test_id("fact-version")).to_have_text(str(seen["version"]))
    page.get_by_test_id("answer-input").fill("eu-west-1")

    # When someone else changes the contract meanwhile, and the owner sends the answer
    with stack.client() as http:
        theirs = http.patch(f"/contracts/{cid}", json={"description": "moved to another account"}).json()
        assert theirs["version"] == seen["version"] + 1
    page.get_by_test_id("answer-send").click()

    # Then the answer is refused (409 VERSION_CONFLICT), shown as changed since it was loaded, nothing written
    notice = page.get_by_test_id("conflict")
    expect(notice).to_contain_text("Changed since you loaded it")
    expect(notice).to_contain_text(f"version {theirs['version']}")
    with stack.client() as http:
        assert get(http, f"/contracts/{cid}/questions")["questions"][0]["status"] == "pending"
    expect(page.get_by_test_id("fact-version")).to_have_text(str(theirs["version"]))

    # And the owner, having seen the new state, sends the kept answer again: accepted
    expect(page.get_by_test_id("answer-input")).to_have_value("eu-west-1")
    page.get_by_test_id("answer-send").click()
    expect(page.get_by_test_id("action-result")).to_have_text("Answer sent.")
    with stack.client() as http:
        answered = get(http, f"/contracts/{cid}/questions")["questions"][0]
        assert (answered["status"], answered["answer"]) == ("answered", "eu-west-1")


def test_an_answer_to_a_question_answered_meanwhile_is_refused_with_the_notice(stack: Stack, page: Page) -> None:
    quiet_monitor(page)
    with stack.client() as http:
        contract = make(http, f"raced-{uuid.uuid4().hex[:6]}")
        question = http.post(f"/contracts/{contract['id']}/questions", json={"question": "Ship it?"}).json()
    open_contract(page, stack, contract, f"?answer={question['id']}")
    page.get_by_test_id("answer-input").fill("no")
    with stack.client() as http:
        first = http.post(f"/contracts/{contract['id']}/questions/{question['id']}/answer", json={"answer": "yes"})
        assert first.status_code == 200, first.text
    page.get_by_test_id("answer-send").click()
    expect(page.get_by_test_id("conflict")).to_contain_text("already answered")
    with stack.client() as http:
        assert get(http, f"/contracts/{contract['id']}/questions")["questions"][0]["answer"] == "yes"
    expect(page.locator(f"li[data-question-id='{question['id']}']")).to_contain_text("yes")


# --- accessibility ---------------------------------------------------------------------------------------


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    try:
        script = fetch_axe()
    except AxeUnavailable as exc:
        pytest.fail(str(exc))
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(script))
    result: dict[str, Any] = page.evaluate("async () => await window.axe.run(document)")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_view_passes_axe_without_serious_violations(
    stack: Stack, browser: Browser, scheme: Literal["light", "dark"]
) -> None:
    with stack.client() as http:
        contract, sup = with_supervisor(http, f"a11y-{uuid.uuid4().hex[:6]}", phase_guard=True)
        beat(http, contract["id"], sup, 20)
        beat(http, contract["id"], sup, 40)
        http.post(f"/contracts/{contract['id']}/questions", json={"question": "Ok?", "options": ["yes", "no"]})
        http.post(f"/contracts/{contract['id']}/messages", json={"content": "hi"})
    # bypass_csp: axe is injected as an inline script, which the page's CSP (rightly) refuses. Only this
    # test's browser context bypasses it; the page served is the same, and axe is never part of it.
    context = browser.new_context(viewport=VIEWPORT, color_scheme=scheme, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto(f"{stack.base_url}/dashboard")
        expect(page.locator("#login")).to_be_visible()
        found = {"sign-in": axe_violations(page)}
        page.fill("#login-token", stack.admin_token)
        page.click("#login-form button[type=submit]")
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=15_000)
        found["dashboard"] = axe_violations(page)
        page.click("[data-nav=contracts]")
        expect(page.locator("[data-testid=contracts-table] tbody tr[data-contract-id]").first).to_be_visible()
        found["list"] = axe_violations(page)
        page.goto(f"{stack.base_url}/dashboard#/contracts/{contract['id']}?answer=1")
        expect(page.get_by_test_id("answer-input")).to_be_focused()
        expect(page.locator("[data-testid=heartbeat-chart] circle")).to_have_count(2)
        found["contract"] = axe_violations(page)
        page.get_by_test_id("action-pause").click()
        expect(page.get_by_test_id("dialog")).to_be_visible()
        found["dialog"] = axe_violations(page)
    finally:
        context.close()
    bad = {k: v for k, v in found.items() if v}
    assert not bad, json.dumps(bad, indent=1)


def test_the_contract_page_fits_a_phone_and_is_keyboard_operable(stack: Stack, browser: Browser) -> None:
    with stack.client() as http:
        contract, _ = with_supervisor(http, f"phone-{uuid.uuid4().hex[:6]} with a rather long name to wrap")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        open_contract(page, stack, contract)
        # nothing wider than the screen
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # the pause dialog opens and closes from the keyboard, giving focus back
        page.get_by_test_id("action-pause").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("dialog")).to_be_visible()
        expect(page.locator("#dialog-reason")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.get_by_test_id("dialog")).to_be_hidden()
        expect(page.get_by_test_id("action-pause")).to_be_focused()
        with stack.client() as http:
            assert get(http, f"/contracts/{contract['id']}")["status"] == "active"
        # the list too
        page.click("[data-nav=contracts]")
        expect(page.get_by_test_id("contracts-view")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
