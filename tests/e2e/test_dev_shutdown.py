"""Stopping ``makima dev --demo N`` with one SIGTERM (issue 17, item 14): the fleet stops first, while
the API still answers, so every supervisor it hosts saves a ``shutdown`` state (a later restore is a
clean one, not a crash); then the API and the database; the process exits 0, promptly, without a
flood of ``UNREACHABLE`` errors from a fleet left talking to a stopped API.

The stack runs on a database of the test server (not an embedded one) so the test can read the
supervisors' last saves after the stack is gone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, free_port

pytestmark = pytest.mark.e2e

SUPERVISORS = 3
# The fleet's supervisors each save on stop (one request each) and the API drains: well under this.
EXIT_WITHIN = 45.0


def _working_supervisors(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM supervisor_states WHERE heartbeat_count > 0 AND state NOT IN ('completed', 'failed')"
        ).fetchone()
    return int(row[0]) if row else 0


def test_one_sigterm_stops_the_fleet_then_the_api_cleanly(fresh_database: Callable[[str], str], tmp_path: Path) -> None:
    # Given `makima dev --demo 3` on its own database, with its supervisors at work
    url = fresh_database("makima_shutdown")
    port = free_port()
    log = tmp_path / "dev.log"
    env = {**os.environ, "DATABASE_URL": url, "MAKIMA_ADMIN_TOKEN": ADMIN_TOKEN}
    args = [sys.executable, "-m", "makima.cli.main", "dev", "--port", str(port)]
    args += ["--data-dir", str(tmp_path / "unused"), "--demo", str(SUPERVISORS)]
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if healthy and _working_supervisors(url) >= SUPERVISORS:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the demo fleet did not get to work:\n{log.read_text()}")
        time.sleep(2)  # a few heartbeats and saves in

        # When it gets one SIGTERM
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = proc.wait(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"makima dev still running {EXIT_WITHIN:g} s after one SIGTERM:\n{log.read_text()}")
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()

    # Then it exits 0, within the bound, having said it stopped, and no request found the API gone
    assert code == 0, output
    assert took < EXIT_WITHIN
    assert "makima: stopped" in output, output
    assert "UNREACHABLE" not in output, output
    assert "Traceback" not in output, output
    # And the fleet stopped before the API: it said so, and its summary (asked of the API) came after
    assert output.index("makima: stopping") < output.index("makima: stopped")

    # And every supervisor the fleet hosted at the stop saved a shutdown state last; the only others are
    # those that had finished, or had crashed (by the demo's design) and not yet been restored
    crashed: dict[str, int] = {}
    for match in re.finditer(r"#\d+ ([0-9a-f]{8}) (CRASHED|restored on)", output):
        crashed[match[1]] = crashed.get(match[1], 0) + (1 if match[2] == "CRASHED" else -1)
    left_crashed = {cid for cid, n in crashed.items() if n > 0}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT contract_id::text, state, last_save_point FROM supervisor_states ORDER BY contract_id"
        ).fetchall()
    hosted = [(cid, state, save) for cid, state, save in rows if state not in ("completed", "failed")]
    assert hosted, rows
    not_clean = [
        (cid, state, save) for cid, state, save in hosted if save != "shutdown" and cid[:8] not in left_crashed
    ]
    assert not_clean == [], output
    assert sum(1 for _, _, save in hosted if save == "shutdown") >= SUPERVISORS - len(left_crashed)
