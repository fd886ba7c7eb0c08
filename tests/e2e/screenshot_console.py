"""Take the web console's pictures for the README: ``docs/img/console-list.png`` (the contract list),
``docs/img/console-contract.png`` (a contract's page) and ``docs/img/console-answer.png`` (the answer flow).

    .venv/bin/python -m tests.e2e.screenshot_console [--out-dir docs/img]

Starts ``makima dev --demo 4`` on a fresh embedded PostgreSQL, adds a guarded contract with a supervisor
that beats through a few states, tasks, a chat and a pending question, then photographs the pages in
headless Chromium (Debian's, never a downloaded one) at 1400x900. Takes about a minute.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from tests.e2e.browser import VIEWPORT, launch_chromium
from tests.e2e.conftest import ADMIN_TOKEN
from tests.e2e.screenshot_dashboard import _say, demo_stack

ROOT = Path(__file__).resolve().parents[2]
NAME = "Single sign-on for enterprise"
QUESTION = "Should enterprise SSO use OIDC only, or SAML as well?"
BEATS = [(5, "initializing"), (12, "working"), (20, "working"), (28, "waiting_for_tasks"), (35, "working")]
BEATS += [(44, "working"), (51, "waiting_for_tasks"), (58, "working"), (63, "working"), (66, "waiting_for_user")]


def _seed(http: httpx.Client) -> str:
    """The contract the pictures show; its id."""
    made = http.post("/contracts", json={"name": NAME, "contract_type": "specification", "phase_guard": True})
    made.raise_for_status()
    cid = str(made.json()["id"])
    started = http.post(f"/contracts/{cid}/supervisor", json={"name": "supervisor"})
    started.raise_for_status()
    task_id = started.json()["supervisor"]["task_id"]
    for name, status in (("Survey identity providers", "completed"), ("Draft the SSO options memo", "running")):
        tid = http.post(f"/contracts/{cid}/tasks", json={"name": name, "daemon": "build-host-2"}).json()["id"]
        http.post(f"/contracts/{cid}/tasks/{tid}/status", json={"status": "running"}).raise_for_status()
        if status == "completed":
            http.post(f"/contracts/{cid}/tasks/{tid}/status", json={"status": "completed"}).raise_for_status()
    http.post(f"/contracts/{cid}/deliverables", json={"deliverable_id": "research-notes"}).raise_for_status()
    http.post(f"/contracts/{cid}/messages", json={"content": "Focus on Okta and Entra ID first."})
    for progress, state in BEATS:
        http.post(
            f"/contracts/{cid}/supervisor/heartbeat",
            json={
                "task_id": task_id,
                "state": state,
                "phase": "research",
                "progress": progress,
                "current_activity": "Comparing OIDC and SAML support across providers",
                "timestamp": datetime.now(UTC).isoformat(),
            },
        ).raise_for_status()
        time.sleep(0.6)
    http.post(f"/contracts/{cid}/questions", json={"question": QUESTION, "options": ["OIDC only", "OIDC and SAML"]})
    return cid


def take(out_dir: Path) -> None:
    with demo_stack(4) as base:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=f"{base}/api/v1", headers=headers, timeout=30) as http:
            cid = _seed(http)
        time.sleep(15)  # the demo fleet gets going
        out_dir.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
                page.goto(f"{base}/dashboard#/contracts")
                page.fill("#login-token", ADMIN_TOKEN)
                page.click("#login-form button[type=submit]")
                expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=20_000)
                page.wait_for_timeout(2_000)
                page.screenshot(path=str(out_dir / "console-list.png"))
                page.goto(f"{base}/dashboard#/contracts/{cid}")
                expect(page.get_by_test_id("contract-name")).to_have_text(NAME)
                page.wait_for_timeout(2_000)
                page.screenshot(path=str(out_dir / "console-contract.png"))
                page.goto(f"{base}/dashboard#/contracts/{cid}?answer=1")
                expect(page.get_by_test_id("answer-input")).to_be_focused()
                page.get_by_role("button", name="OIDC and SAML", exact=True).click()
                page.get_by_test_id("answer-input").press_sequentially(": SAML for the two legacy customers")
                page.get_by_test_id("questions").scroll_into_view_if_needed()
                page.screenshot(path=str(out_dir / "console-answer.png"))
            finally:
                browser.close()
        _say(f"saved console-list.png, console-contract.png, console-answer.png in {out_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    take(parser.parse_args().out_dir)


if __name__ == "__main__":
    main()
