"""The README's walkthrough and Phase 1's guarantees, over HTTP against the running local stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


def test_readme_walkthrough(stack: Stack) -> None:
    with stack.client() as api:
        # create a contract with the phase guard on
        c = api.post("/contracts", json={"name": "Add login", "contract_type": "simple", "phase_guard": True}).json()
        assert (c["phase"], c["status"], c["version"]) == ("plan", "created", 1)
        cid = c["id"]
        # complete the plan phase's deliverable
        r = api.post(f"/contracts/{cid}/deliverables", json={"deliverable_id": "plan-document"})
        assert r.status_code == 200
        # try to advance: the guard asks for confirmation and shows the deliverables
        r = api.post(f"/contracts/{cid}/phase", json={"phase": "execute", "expected_version": 1})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "PHASE_GUARD_REQUIRED"
        assert r.json()["error"]["details"]["deliverables"][0]["completed"] is True
        # confirm
        r = api.post(f"/contracts/{cid}/phase", json={"phase": "execute", "expected_version": 1, "confirmed": True})
        assert (r.status_code, r.json()["phase"], r.json()["version"]) == (200, "execute", 2)
        # see the events
        types = [e["type"] for e in api.get(f"/contracts/{cid}/events").json()["events"]]
        assert types == ["contract_created", "deliverable_completed", "phase_changed"]


def test_concurrent_phase_changes_over_http(stack: Stack) -> None:
    with stack.client() as api:
        cid = api.post("/contracts", json={"name": "race", "contract_type": "specification"}).json()["id"]
    barrier = threading.Barrier(20)
    codes: list[int] = []
    lock = threading.Lock()

    def racer() -> None:
        with stack.client() as api:
            barrier.wait()
            r = api.post(f"/contracts/{cid}/phase", json={"phase": "specify", "expected_version": 1, "force": True})
            with lock:
                codes.append(r.status_code)

    threads = [threading.Thread(target=racer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(codes) == {200: 1, 409: 19}
    with stack.client() as api:
        assert api.get(f"/contracts/{cid}").json()["version"] == 2


def test_admin_cli_against_the_stack(stack: Stack) -> None:
    def makima(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "makima.cli.main",
                "admin",
                *args,
                "--api-url",
                stack.base_url,
            ],
            env={**os.environ, "MAKIMA_TOKEN": stack.admin_token},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    made = makima("create-user", "dana")
    assert made.returncode == 0, made.stderr
    user = json.loads(made.stdout)
    issued = json.loads(makima("issue-token", user["id"], "--kind", "daemon", "--name", "host-1").stdout)
    assert (
        httpx.get(f"{stack.api}/contracts", headers={"Authorization": f"Bearer {issued['token']}"}).status_code == 200
    )
    assert makima("revoke-token", issued["id"]).returncode == 0
    assert (
        httpx.get(f"{stack.api}/contracts", headers={"Authorization": f"Bearer {issued['token']}"}).status_code == 401
    )
    # an API error is one clear line with its code, and a non-zero exit status
    dup = makima("create-user", "dana")
    assert dup.returncode == 1
    assert dup.stderr.strip() == "error: CONFLICT: user name 'dana' is taken"


def test_data_survives_a_restart_and_the_admin_token_is_printed_once(stack_dir: Path) -> None:
    tmp_path = stack_dir
    first = start_stack(tmp_path / "pgdata", tmp_path / "first.log", admin_token=None)
    try:
        log = first.log.read_text()
        token = next(line.split("=", 1)[1] for line in log.splitlines() if "MAKIMA_TOKEN=" in line)
        with first.client(token) as api:
            cid = api.post("/contracts", json={"name": "keep me"}).json()["id"]
    finally:
        stop_stack(first, signal.SIGTERM)
    # a stopped stack leaves no PostgreSQL running behind it, whether stopped by SIGTERM or Ctrl-C
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
    second = start_stack(tmp_path / "pgdata", tmp_path / "second.log", admin_token=None)
    try:
        assert "MAKIMA_TOKEN=" not in second.log.read_text()
        with second.client(token) as api:
            assert api.get(f"/contracts/{cid}").json()["name"] == "keep me"
    finally:
        stop_stack(second, signal.SIGINT)
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()


def test_a_revoked_admin_token_stays_revoked_across_a_restart(stack_dir: Path) -> None:
    # Given a stack started with a chosen admin token, which is then revoked through the API (a leak)
    token = f"mkm_e2e_leaked_{uuid.uuid4().hex}"
    first = start_stack(stack_dir / "pgdata", stack_dir / "first.log", admin_token=token)
    try:
        with first.client(token) as api:
            me = api.get("/users").json()["users"]
            admin_id = next(u["id"] for u in me if u["name"] == "admin")
            token_id = next(t["id"] for t in api.get(f"/users/{admin_id}/tokens").json()["tokens"])
            assert api.delete(f"/tokens/{token_id}").status_code == 204
            assert api.get("/contracts").status_code == 401
    finally:
        stop_stack(first, signal.SIGTERM)
    # When it is restarted with the same --admin-token (a script that always passes it)
    second = start_stack(stack_dir / "pgdata", stack_dir / "second.log", admin_token=token)
    try:
        # Then it starts, the token is still refused, and the log says so without the secret
        with second.client(token) as api:
            assert api.get("/contracts").status_code == 401
        log = second.log.read_text()
        assert "revoked" in log
        assert token not in log
    finally:
        stop_stack(second, signal.SIGINT)
