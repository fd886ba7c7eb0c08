"""``makima demo`` against the local stack: a fleet of reference supervisors, one of which crashes
mid-phase and is restored on a second daemon, drives every contract to completed; exit status 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def test_demo_fleet_completes_every_contract_with_a_crash_restored(stack: Stack) -> None:
    args = [
        sys.executable,
        "-m",
        "makima.cli.main",
        "demo",
        "--supervisors",
        "3",
        "--crash",
        "1",
        "--step-delay",
        "0.05",
        "--heartbeat-interval",
        "0.5",
        "--duration",
        "50",
        "--api-url",
        stack.base_url,
    ]
    env = {**os.environ, "MAKIMA_TOKEN": stack.admin_token}
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "demo: 3/3 contracts completed, 1 crashed and 1 restored" in out, out
    assert "(0 duplicated)" in out
    assert re.search(r"CRASHED after \S+", out), out
    assert "mode crash, generation 2" in out

    # What the demo says is what the service holds
    match = re.search(r"fleet (\w+):", out)
    assert match, out
    run = match.group(1)
    with stack.client() as http:
        contracts = [
            c
            for c in http.get("/contracts", params={"limit": 200}).json()["contracts"]
            if c["name"].startswith(f"demo {run} #")
        ]
        assert len(contracts) == 3
        assert {c["status"] for c in contracts} == {"completed"}
        restored = 0
        for c in contracts:
            events = http.get(f"/contracts/{c['id']}/events", params={"limit": 1000}).json()["events"]
            restored += sum(1 for e in events if e["type"] == "supervisor_restored")
            tasks = http.get(f"/contracts/{c['id']}/tasks").json()["tasks"]
            names = Counter(t["name"] for t in tasks)
            assert max(names.values()) == 1
            assert len(names) == 1 + 5 * 2  # the supervisor, and two tasks in each of the five phases
        assert restored == 1


def test_demo_against_nothing_exits_3() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "makima.cli.main", "demo", "--api-url", "http://127.0.0.1:9", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "error:" in done.stdout + done.stderr
