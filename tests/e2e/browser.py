"""Debian's Chromium for the web dashboard tests, driven by Playwright (which never downloads a browser),
and the ``browser`` fixture the e2e conftest shares between the dashboard test modules."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import Browser, Playwright, ViewportSize

CHROMIUM = os.environ.get("MAKIMA_CHROMIUM", "/usr/bin/chromium")
# No sandbox (containers, root), and nothing that would reach for the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's chromium, headless: Playwright must never download a browser."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def require_browser() -> None:
    # Deliberate: a developer running pytest on a machine without Debian's chromium gets a skip with the
    # reason; `make test` and CI install chromium and set MAKIMA_REQUIRE_BROWSER=1, where a missing
    # browser is a failure instead (as MAKIMA_REQUIRE_SAM does for the SAM CLI in tests/infra/sam.py).
    if os.access(CHROMIUM, os.X_OK):
        return
    reason = f"{CHROMIUM} is not installed (apt-get install chromium; `make test` does it)"
    if os.environ.get("MAKIMA_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (MAKIMA_REQUIRE_BROWSER is set)")
    pytest.skip(f"{reason}; set MAKIMA_REQUIRE_BROWSER=1 to make this a failure")
