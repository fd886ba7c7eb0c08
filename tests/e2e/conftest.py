"""The local stack, started the way a user starts it (``makima dev``), in a fresh embedded PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import server_dir

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ADMIN_TOKEN = "mkm_e2e_admin_token_not_secret_0123456789"


@dataclass
class Stack:
    base_url: str
    admin_token: str
    data_dir: Path
    process: subprocess.Popen[str]
    log: Path

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/v1"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def database_url(self) -> str:
        """The running stack's embedded PostgreSQL (from its postmaster.pid), for tests that must
        reach under the API: ageing rows in time, say."""
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        assert info is not None, "the stack's database is not running"
        return str(info.get_uri())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_stack(
    data_dir: Path,
    log: Path,
    admin_token: str | None = ADMIN_TOKEN,
    port: int | None = None,
    settings: dict[str, str] | None = None,
) -> Stack:
    """``makima dev`` on ``port`` (a free one by default; pass the old one to restart a stack in place),
    with ``settings`` as extra ``MAKIMA_…`` environment."""
    port = port or free_port()
    # the embedded database, as a new user; no admin token but the one given
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAKIMA_ADMIN_TOKEN")}
    env.update(settings or {})
    args = [sys.executable, "-m", "makima.cli.main", "dev", "--port", str(port), "--data-dir", str(data_dir)]
    if admin_token:
        env["MAKIMA_ADMIN_TOKEN"] = admin_token  # not an argument: those are visible to every user (ps)
    out = log.open("w")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"makima dev exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return Stack(base, admin_token or "", data_dir, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"makima dev did not become healthy:\n{log.read_text()}")


def stop_stack(stack: Stack, signum: int = signal.SIGINT) -> None:
    stack.process.send_signal(signum)
    try:
        stack.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    root = server_dir()
    s = start_stack(root / "pgdata", root / "stack.log")
    try:
        yield s
    finally:
        stop_stack(s)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    root = server_dir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per module (the web dashboard tests)."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.browser import launch_chromium, require_browser

    require_browser()
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (its own browser context) that fails the test on any JavaScript error it saw."""
    from tests.e2e.browser import VIEWPORT

    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
