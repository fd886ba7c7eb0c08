"""``makima dev`` given its admin token through the environment or a file (issue 12, defect 6): the token
works, and it is nowhere in the process's arguments (``/proc/<pid>/cmdline``, what ``ps`` shows)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e
SECRET = "mkm_e2e_secret_never_in_argv_0123456789"


def _cmdlines(pid: int) -> list[str]:
    """The argument vectors of ``pid`` and its descendants, as ``ps`` would show them."""
    found = []
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            found.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pending += [int(c) for c in children]
    return found


def _launch(args: list[str], env: dict[str, str], log: Path, port: int, stdin: str | None = None) -> None:
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "makima.cli.main", "dev", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            text=True,
            env=env,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            # Then the token is nowhere in the arguments of the process or its children
            lines = _cmdlines(proc.pid)
            assert any("makima.cli.main" in line for line in lines)
            assert not [line for line in lines if SECRET in line]
            # And it is the admin's token
            r = httpx.get(f"{base}/api/v1/users", headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
            assert r.status_code == 200, r.text
            assert SECRET not in log.read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture
def stack_env(fresh_database: Callable[[str], str]) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = fresh_database("makima_secrets")
    env.pop("MAKIMA_ADMIN_TOKEN", None)
    return env


def test_dev_takes_the_admin_token_from_the_environment(stack_env: dict[str, str], tmp_path: Path) -> None:
    _launch([], {**stack_env, "MAKIMA_ADMIN_TOKEN": SECRET}, tmp_path / "dev.log", free_port())


def test_dev_takes_the_admin_token_from_a_file(stack_env: dict[str, str], tmp_path: Path) -> None:
    secret = tmp_path / "admin-token"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    _launch(["--admin-token-file", str(secret)], stack_env, tmp_path / "dev.log", free_port())


def test_dev_takes_the_admin_token_from_stdin(stack_env: dict[str, str], tmp_path: Path) -> None:
    _launch(["--admin-token-file", "-"], stack_env, tmp_path / "dev.log", free_port(), stdin=SECRET + "\n")
