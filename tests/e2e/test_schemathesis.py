"""Property-based fuzzing of every operation of the OpenAPI schema against the running local stack, with
every check schemathesis has (each switched on in the generated configuration) and its stateful phase
(chains along the document's links: create a contract, then use it): no 5xx, every answer's status,
code, headers and body as documented, schema-valid requests accepted, 405 with ``Allow``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

from makima.api.app import create_app
from makima.api.routers import ALL_ROUTERS
from makima.lambda_support import runtime
from tests.conftest import server_dir
from tests.e2e.conftest import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Stack]:
    """A stack of its own, whose supervisors never time out during the run (heartbeats are not part of
    the fuzzing, and a supervisor the stateful phase started would otherwise be swept dead after 2 min,
    turning a sync into its documented 503 SUPERVISOR_DEAD, which the no-5xx check cannot tell from a
    crash), and with a 1 s heartbeat interval, so a sync waits ~3 s for a heartbeat rather than 25 s."""
    root = server_dir()
    settings = {
        "MAKIMA_CONTRACTS__HEARTBEAT_INTERVAL_SECONDS": "1",
        "MAKIMA_CONTRACTS__HEARTBEAT_TIMEOUT_SECONDS": "86400",
    }
    s = start_stack(root / "pgdata", root / "stack.log", settings=settings)
    try:
        yield s
    finally:
        stop_stack(s)
        shutil.rmtree(root, ignore_errors=True)


# schemathesis' own lists of the statuses that may answer schema-valid data (positive_data_acceptance)
# and that reject invalid data (negative_data_rejection).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]
SYNC = "/api/v1/contracts/{contract_id}/supervisor/sync"


def every_check() -> list[str]:
    """The name of every check the installed schemathesis has (its own and any registered)."""
    load_all_checks()
    return sorted(CHECKS.get_all_names())


def fuzz_config(document: dict[str, Any]) -> str:
    """schemathesis' configuration (TOML), generated from the document, itself generated from the error
    classes, so neither can drift:

    - for each operation whose responses name codes a schema-valid request may still get
      (``x-refused-beyond-schema``: a move the contract's status does not allow, a deliverable its type
      lacks, a heartbeat's clock; ``MakimaError.beyond_schema``), those statuses are accepted answers
      to schema-valid data besides schemathesis' defaults; every other 400/422 to one stays a failure;
    - the supervisor sync is a documented long poll (``wait_seconds`` up to its maximum): its response
      time limit is that maximum plus 10 s, where other operations keep schemathesis' default;
    - 413 ``PAYLOAD_TOO_LARGE`` (declared by every operation with a body) rejects invalid data as well
      as 422 does: a body over the size limit (256 KiB) is refused before it is read, whatever it holds,
      and the limit is on bytes, which a schema cannot state (1000 worktree paths of 4096 characters);
    - an operation whose 404 may be about an id its body names (``x-about-the-body``: the task a question
      refers to, the daemon a supervisor is put on; ``MakimaError.about_body``) is left out of
      ``ensure_resource_availability``, which reads any 404 after a creation as "the created resource is
      gone": here the URL's resource is there, and the answer is the 404 a missing id gets so that other
      tenants' ids stay unknowable (docs/security.md);
    - links are the document's (generated, ``api/openapi.py``); schemathesis' own guessing of
      dependencies ("dependency-analysis") is left out: it took ``daemon_id`` from GET
      /tasks/reassignable, where it is null for a task no daemon holds, and sent it as a path id.
    """
    declares_413 = any("413" in op["responses"] for item in document["paths"].values() for op in item.values())
    rejected = f"expected-statuses = {json.dumps(REJECTED + ['413'] * declares_413)}"
    blocks = ['[phases.stateful.inference]\nalgorithms = ["location-headers"]']
    # Every check, switched on here rather than by `--checks all`: the CLI's choice overrides every
    # operation's own, so an operation's "enabled = false" below would not hold under it.
    for name in every_check():
        blocks.append(
            f"[checks.{name}]\nenabled = true" + (f"\n{rejected}" if name == "negative_data_rejection" else "")
        )
    for path, item in document["paths"].items():
        for op in item.values():
            lines = []
            statuses = sorted(s for s, r in op["responses"].items() if r.get("x-refused-beyond-schema"))
            if statuses:
                lines += [
                    "[operations.checks.positive_data_acceptance]",
                    f"expected-statuses = {json.dumps(ACCEPTED + statuses)}",
                ]
            if any(r.get("x-about-the-body") for r in op["responses"].values()):
                lines += ["[operations.checks.ensure_resource_availability]", "enabled = false"]
            if path == SYNC:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0]["$ref"]
                wait = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]["wait_seconds"]
                maximum = max(b.get("maximum", 0) for b in wait.get("anyOf", [wait]))
                lines = ["[operations.checks]", f"max_response_time = {maximum + 10}", *lines]
            if lines:
                blocks.append(
                    "\n".join(["[[operations]]", f"include-operation-id = {json.dumps(op['operationId'])}", *lines])
                )
    return "\n\n".join(blocks) + "\n"


# The run may take as long as its subprocess is given (900 s), not the suite's 300 s per test: with the
# LangGraph checkpoint operations (issue 18) it fuzzes 58 operations, about 5 minutes on a loaded machine.
@pytest.mark.timeout(900)
def test_no_failure_with_every_check_and_the_stateful_phase(fuzzed: Stack, tmp_path: Path) -> None:
    stack = fuzzed
    # Fuzz as an ordinary user so that admin-only operations are exercised for their refusals too, and
    # so the run cannot revoke the token it authenticates with, leave revocation out.
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    user = httpx.post(f"{stack.api}/users", json={"name": "fuzzer"}, headers=admin).json()
    token = httpx.post(f"{stack.api}/users/{user['id']}/tokens", json={"name": "fuzz"}, headers=admin).json()["token"]
    document = httpx.get(f"{stack.api}/openapi.json").json()
    config = tmp_path / "schemathesis.toml"
    config.write_text(fuzz_config(document))
    schemathesis = Path(sys.executable).with_name("schemathesis")
    started = time.monotonic()
    result = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(config),
            "run",
            f"{stack.api}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--exclude-path",
            "/api/v1/tokens/{token_id}",
            # A loaded 2-core CI machine must not turn slowness into a failure: correctness is checked here,
            # speed in tests/bench.
            "--suppress-health-check",
            "too_slow,filter_too_much",
            "--request-timeout",
            "30",
            "--max-examples",
            "40",
            "--seed",
            "20261124",
            "--no-color",
            # One worker: with several threads, hypothesis's lambda-source parsing trips a CPython 3.11
            # ast bug ("AST constructor recursion depth mismatch") inside schemathesis itself.
            "--workers",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = result.stdout[-6000:]
    print(f"schemathesis ran {time.monotonic() - started:.0f} s:\n{summary}")
    assert result.returncode == 0, summary
    assert "✅ Stateful" in summary, summary
    assert " failures" not in summary.split("SUMMARY")[-1].lower(), summary


def test_the_configuration_holds_per_operation_in_every_phase(tmp_path: Path) -> None:
    # Given the configuration generated from the document, loaded as the run loads it
    document = create_app(runtime.CONTAINER_DATABASE, routers=ALL_ROUTERS).openapi()  # nothing connects
    path = tmp_path / "schemathesis.toml"
    path.write_text(fuzz_config(document))
    schema = schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_path(str(path)))
    about_the_body = {
        f"{method.upper()} {url}"
        for url, item in document["paths"].items()
        for method, op in item.items()
        if any(r.get("x-about-the-body") for r in op["responses"].values())
    }
    assert about_the_body

    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        for phase in ("examples", "coverage", "fuzzing", "stateful"):
            checks = schema.config.checks_config_for(operation=operation, phase=phase)
            # Then every check is on for every operation, in every phase ...
            enabled = {name for name in every_check() if checks.get_by_name(name=name).enabled}
            expected = set(every_check()) - (
                {"ensure_resource_availability"} if operation.label in about_the_body else set()
            )
            # ... but the one an operation whose 404 may be about its body leaves out, the stateful
            # phase included (a created daemon, then its heartbeat naming an unknown task: 404 by design)
            assert enabled == expected, (operation.label, phase)

    # And that is why the run does not pass `--checks all`: the CLI's choice overrides the operations'
    # own, and the stateful phase then read a 404 about a body's task id as "the created daemon is gone"
    config = SchemathesisConfig.from_path(str(path))
    config.projects.override.checks.update(included_check_names=["all"])
    overridden = schemathesis.openapi.from_dict(document, config=config)
    heartbeat = next(
        r.ok() for r in overridden.get_all_operations() if isinstance(r, Ok) and r.ok().label in about_the_body
    )
    checks = overridden.config.checks_config_for(operation=heartbeat, phase="stateful")
    assert checks.get_by_name(name="ensure_resource_availability").enabled
