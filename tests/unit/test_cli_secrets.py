"""Secrets out of process arguments, and a private CLI config (issue 12, defect 6).

``makima dev``'s admin token and ``makima login``'s token come from the environment, a file or standard
input (``-``); the old argv flags still work, with a warning that ``ps`` shows them. The config directory
is 0700 and the file 0600, tightened when they exist looser."""

# ruff: noqa: F811  (server and config_file are the fixtures imported from test_cli_contracts)
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from makima.cli.config import read_file, write_file
from tests.unit.test_cli_contracts import FakeServer, config_file, run, server  # noqa: F401  (fixtures)

PS_WARNING = "visible to other users"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``makima dev`` without starting anything: what it would hand the local stack."""
    import makima.local.stack as stack

    seen: dict[str, Any] = {}

    def serve(settings: Any, **kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(stack, "serve", serve)
    monkeypatch.delenv("MAKIMA_ADMIN_TOKEN", raising=False)
    return seen


# --- makima dev ---------------------------------------------------------------------------------------


def test_dev_reads_the_admin_token_from_the_environment(served: dict[str, Any]) -> None:
    result = run("dev", env={"MAKIMA_ADMIN_TOKEN": "mkm_from_env"})
    assert result.exit_code == 0, result.output
    assert served["admin_token"] == "mkm_from_env"
    assert PS_WARNING not in result.stderr


def test_dev_reads_the_admin_token_from_a_file(served: dict[str, Any], tmp_path: Path) -> None:
    secret = tmp_path / "admin-token"
    secret.write_text("mkm_from_file\n")
    result = run("dev", "--admin-token-file", str(secret))
    assert result.exit_code == 0, result.output
    assert served["admin_token"] == "mkm_from_file"
    assert PS_WARNING not in result.stderr


def test_dev_reads_the_admin_token_from_stdin(served: dict[str, Any]) -> None:
    result = run("dev", "--admin-token-file", "-", stdin="mkm_from_stdin\n")
    assert result.exit_code == 0, result.output
    assert served["admin_token"] == "mkm_from_stdin"


def test_dev_admin_token_flag_still_works_but_warns(served: dict[str, Any]) -> None:
    result = run("dev", "--admin-token", "mkm_in_argv")
    assert result.exit_code == 0, result.output
    assert served["admin_token"] == "mkm_in_argv"
    assert PS_WARNING in result.stderr
    assert "MAKIMA_ADMIN_TOKEN" in result.stderr


@pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank"])
def test_dev_refuses_an_empty_token_file(served: dict[str, Any], tmp_path: Path, content: str) -> None:
    secret = tmp_path / "admin-token"
    secret.write_text(content)
    result = run("dev", "--admin-token-file", str(secret))
    assert result.exit_code == 2
    assert "empty" in result.stderr
    assert served == {}


def test_dev_refuses_a_missing_token_file(served: dict[str, Any], tmp_path: Path) -> None:
    result = run("dev", "--admin-token-file", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "nope" in result.stderr
    assert served == {}


def test_dev_refuses_two_sources_at_once(served: dict[str, Any], tmp_path: Path) -> None:
    secret = tmp_path / "admin-token"
    secret.write_text("mkm_a")
    result = run("dev", "--admin-token", "mkm_b", "--admin-token-file", str(secret))
    assert result.exit_code == 2
    assert "not both" in result.stderr
    assert served == {}


# --- makima login -------------------------------------------------------------------------------------


def _ok(server: FakeServer) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})


def test_login_reads_the_token_from_a_file(server: FakeServer, config_file: Path, tmp_path: Path) -> None:
    _ok(server)
    secret = tmp_path / "token"
    secret.write_text("mkm_file_token\n")
    result = run("login", "--api-url", "http://api.test", "--token-file", str(secret))
    assert result.exit_code == 0, result.output
    assert read_file(config_file)["token"] == "mkm_file_token"
    assert PS_WARNING not in result.stderr


def test_login_reads_the_token_from_stdin(server: FakeServer, config_file: Path) -> None:
    _ok(server)
    result = run("login", "--api-url", "http://api.test", "--token-file", "-", stdin="mkm_piped\n")
    assert result.exit_code == 0, result.output
    assert read_file(config_file)["token"] == "mkm_piped"


def test_login_reads_the_token_from_the_environment(server: FakeServer, config_file: Path) -> None:
    _ok(server)
    result = run("login", "--api-url", "http://api.test", env={"MAKIMA_TOKEN": "mkm_env_token"})
    assert result.exit_code == 0, result.output
    assert read_file(config_file)["token"] == "mkm_env_token"
    assert PS_WARNING not in result.stderr


def test_login_token_flag_still_works_but_warns(server: FakeServer, config_file: Path) -> None:
    _ok(server)
    result = run("login", "--api-url", "http://api.test", "--token", "mkm_argv")
    assert result.exit_code == 0, result.output
    assert PS_WARNING in result.stderr
    assert "--token-file" in result.stderr


def test_contracts_token_flag_warns_but_the_environment_does_not(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})
    flagged = run("contracts", "--api-url", "http://api.test", "--token", "tok", "list")
    from_env = run("contracts", "--api-url", "http://api.test", "list", env={"MAKIMA_TOKEN": "tok"})
    assert flagged.exit_code == from_env.exit_code == 0
    assert PS_WARNING in flagged.stderr
    assert PS_WARNING not in from_env.stderr


# --- the config file ----------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_config_directory_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no config directory yet, at the default place (XDG_CONFIG_HOME/makima)
    monkeypatch.delenv("MAKIMA_CLI_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    old = os.umask(0o022)
    try:
        path = write_file("http://api.test", "mkm_secret")
    finally:
        os.umask(old)
    assert path == tmp_path / "xdg" / "makima" / "cli.toml"
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600


def test_writing_tightens_a_loose_directory_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a config directory and file readable by everyone (an older version, or a careless copy)
    monkeypatch.delenv("MAKIMA_CLI_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    folder = tmp_path / "makima"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "cli.toml").write_text('token = "old"\n')
    (folder / "cli.toml").chmod(0o644)

    # When makima login writes it again
    path = write_file("http://api.test", "mkm_secret")

    # Then both are private, and the new token is there
    assert (_mode(folder), _mode(path)) == (0o700, 0o600)
    assert read_file(path)["token"] == "mkm_secret"


def test_an_explicit_config_path_never_changes_a_shared_directory(tmp_path: Path) -> None:
    # Given MAKIMA_CLI_CONFIG pointing into a directory that is not makima's own (like /tmp)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    path = write_file("http://api.test", "mkm_secret", shared / "cli.toml")
    assert _mode(shared) == 0o1777
    assert _mode(path) == 0o600


# --- the reference supervisor -------------------------------------------------------------------------


def test_the_reference_supervisor_warns_about_a_token_in_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from makima.client.reference import warn_token_in_argv

    assert warn_token_in_argv(["--api-url", "http://x", "--token", "mkm_t", "--contract-id", "c"]) is True
    assert PS_WARNING in capsys.readouterr().err
    assert warn_token_in_argv(["--token=mkm_t"]) is True
    capsys.readouterr()
    assert warn_token_in_argv(["--api-url", "http://x", "--contract-id", "c"]) is False
    assert capsys.readouterr().err == ""
