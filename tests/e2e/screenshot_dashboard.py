"""Take ``docs/img/dashboard.png``: the web dashboard over a local stack running a demo fleet.

    .venv/bin/python -m tests.e2e.screenshot_dashboard [--out docs/img/dashboard.png]

Starts ``makima dev --demo 5`` on a fresh embedded PostgreSQL (stale threshold one minute, so the stale
list has something to show), adds a few contracts that sit idle, a paused one and a failed one, waits
until the fleet has been busy for a while, then photographs the page in headless Chromium (Debian's,
never a downloaded one) at 1400x900. Takes about two minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect, sync_playwright

from tests.conftest import server_dir
from tests.e2e.browser import CHROMIUM, VIEWPORT, launch_chromium
from tests.e2e.conftest import ADMIN_TOKEN, free_port

ROOT = Path(__file__).resolve().parents[2]
IDLE_CONTRACTS = ("Migrate billing to the v2 ledger", "Refresh the onboarding guide")


def _port() -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            return free_port()
    return 8000


def _say(text: str) -> None:
    print(f"screenshot: {text}", flush=True)


def _wait_healthy(base: str, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"makima dev exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"makima dev did not become healthy:\n{log.read_text()}")


def _seed(http: httpx.Client) -> None:
    for name in IDLE_CONTRACTS:
        http.post("/contracts", json={"name": name, "contract_type": "simple"}).raise_for_status()
    paused = http.post("/contracts", json={"name": "Evaluate vector store options", "contract_type": "simple"})
    http.post(f"/contracts/{paused.json()['id']}/status", json={"status": "paused", "reason": "budget review"})
    asking = http.post("/contracts", json={"name": "Single sign-on for enterprise", "contract_type": "simple"})
    aid = asking.json()["id"]
    http.post(f"/contracts/{aid}/status", json={"status": "active"})
    question = "Should enterprise SSO use OIDC only, or SAML as well?"
    http.post(f"/contracts/{aid}/questions", json={"question": question}).raise_for_status()
    failed = http.post("/contracts", json={"name": "Port CLI to Windows", "contract_type": "simple"})
    fid = failed.json()["id"]
    http.post(f"/contracts/{fid}/status", json={"status": "active"})
    http.post(f"/contracts/{fid}/status", json={"status": "failed", "reason": "toolchain unavailable"})


def _ready(dashboard: dict[str, Any]) -> bool:
    return (
        len(dashboard["staleContracts"]) >= len(IDLE_CONTRACTS)
        and len(dashboard["waitingForInput"]) >= 1
        and dashboard["statusCounts"].get("completed", 0) >= 1
        and len(dashboard["phaseCounts"]) >= 2
    )


@contextlib.contextmanager
def demo_stack(demo: int, env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """``makima dev --demo N`` (admin token ``ADMIN_TOKEN``) on a fresh embedded PostgreSQL, once healthy:
    its base URL; stopped and its data removed after (the screenshot scripts share it)."""
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install chromium)")
    root = server_dir()
    port = _port()
    base = f"http://127.0.0.1:{port}"
    log = root / "stack.log"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["MAKIMA_ADMIN_TOKEN"] = ADMIN_TOKEN
    env.update(env_extra or {})
    args = [sys.executable, "-m", "makima.cli.main", "dev", "--port", str(port), "--data-dir", str(root / "pgdata")]
    args += ["--demo", str(demo)]
    _say(f"starting makima dev --demo {demo} on {base}")
    with log.open("w") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_healthy(base, proc, log)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def take(out: Path) -> None:
    with demo_stack(5, {"MAKIMA_CONTRACTS__STALE_THRESHOLD_MINUTES": "1"}) as base:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=f"{base}/api/v1", headers=headers, timeout=30) as http:
            _seed(http)
            _say("waiting for the fleet to get busy and the idle contracts to go stale (about 70 s)")
            started = time.monotonic()
            while True:
                dashboard = http.get("/contracts/dashboard").json()
                if time.monotonic() - started > 65 and _ready(dashboard):
                    break
                if time.monotonic() - started > 300:
                    raise RuntimeError(f"the dashboard never got interesting: {dashboard}")
                time.sleep(1)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
                page.goto(f"{base}/dashboard")  # signed in through the form: a link's ?token= is ignored
                page.fill("#login-token", ADMIN_TOKEN)
                page.click("#login-form button[type=submit]")
                expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=20_000)
                page.wait_for_timeout(4_000)  # a few live events, and the flash of the newest fading out
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=False)
            finally:
                browser.close()
        _say(f"saved {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    take(parser.parse_args().out)


if __name__ == "__main__":
    main()
