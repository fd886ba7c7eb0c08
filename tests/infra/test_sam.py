"""The SAM CLI accepts the template, and ``sam build`` produces a layer the functions can run on.

Needs the SAM CLI in ``.venv-sam`` (``make install``) and the runtime's interpreter (python3.12 by
default) on PATH or under pyenv; ``sam build`` also needs the package registry. Without them these
tests are skipped, unless ``MAKIMA_REQUIRE_SAM`` is set (CI, ``make infra``), which makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.cfn import ROOT, TEMPLATE, load_template, resources_of_type

pytestmark = pytest.mark.infra

SAM = ROOT / ".venv-sam" / "bin" / "sam"
BUILD_TIMEOUT = 900


def _unavailable(reason: str) -> None:
    # Deliberate: a developer running pytest without the SAM CLI installed gets a skip with the reason;
    # `make test` and CI set MAKIMA_REQUIRE_SAM=1 (and install .venv-sam), where it is a failure instead.
    if os.environ.get("MAKIMA_REQUIRE_SAM"):
        pytest.fail(f"{reason} (MAKIMA_REQUIRE_SAM is set)")
    pytest.skip(f"{reason}; run `make install`, or set MAKIMA_REQUIRE_SAM=1 to make this a failure")


def _runtime() -> str:
    runtime = load_template()["Parameters"]["Runtime"]["Default"]
    assert isinstance(runtime, str)
    return runtime  # e.g. "python3.12"


def _runs_as(executable: Path, runtime: str) -> bool:
    """True when ``executable`` really is ``runtime`` (a pyenv shim may exist and fail to run)."""
    try:
        result = subprocess.run(
            [str(executable), "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == runtime


def _interpreter_dir(runtime: str) -> Path | None:
    """A directory holding a working ``python3.X`` for ``runtime``: sam build looks it up on PATH."""
    candidates: list[Path] = []
    found = shutil.which(runtime)
    if found:
        candidates.append(Path(found))
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    version = runtime.removeprefix("python")
    candidates += sorted(pyenv_root.glob(f"versions/{version}.*/bin/{runtime}"), reverse=True)
    return next((c.parent for c in candidates if _runs_as(c, runtime)), None)


@dataclass(frozen=True)
class Build:
    dir: Path
    seconds: float
    output: str


@pytest.fixture(scope="module")
def sam_env() -> dict[str, str]:
    if not SAM.exists():
        _unavailable(f"the SAM CLI is not installed at {SAM.relative_to(ROOT)}")
    runtime = _runtime()
    interpreter = _interpreter_dir(runtime)
    if interpreter is None:
        _unavailable(f"{runtime} is not on PATH nor under pyenv (sam build needs the runtime's interpreter)")
    assert interpreter is not None
    env = dict(os.environ)
    env["PATH"] = f"{interpreter}{os.pathsep}{env.get('PATH', '')}"
    env["SAM_CLI_TELEMETRY"] = "0"
    return env


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def build(sam_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Build:
    work = tmp_path_factory.mktemp("sam")
    started = time.monotonic()
    result = _run(
        [
            str(SAM),
            "build",
            "--no-cached",  # samconfig.toml caches; a test builds from scratch
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(work / "build"),
        ],
        sam_env,
        BUILD_TIMEOUT,
    )
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"sam build failed after {seconds:.0f}s:\n{output[-5000:]}"
    return Build(work / "build", seconds, output)


def test_sam_validate_lint(sam_env: dict[str, str]) -> None:
    # When the SAM CLI validates the template with cfn-lint (offline: no --region needed with --lint)
    result = _run([str(SAM), "validate", "--lint", "--template-file", str(TEMPLATE)], sam_env, 300)

    # Then it is valid
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is a valid SAM Template" in output


def test_sam_build_makes_the_layer_and_every_function(build: Build) -> None:
    # Given a finished sam build
    assert "Build Succeeded" in build.output
    layer = build.dir / "SharedLayer" / "python"
    print(f"sam build took {build.seconds:.1f}s")  # shown with -s: the build time, for the record

    # Then the layer holds the makima package where Lambda imports it (/opt/python/makima) ...
    assert (layer / "makima" / "__init__.py").is_file()
    assert (layer / "makima" / "lambda_support" / "http.py").is_file()
    assert list((layer / "makima" / "migrations").glob("*.sql")), "migrations ship with the package"
    assert list((layer / "makima" / "contract_types").glob("*.json")), "contract types ship with the package"
    # ... with its dependencies, built for the runtime, and without the local-only ones
    for package in ("fastapi", "mangum", "pydantic_core", "psycopg", "psycopg_binary", "aws_lambda_powertools"):
        assert (layer / package).is_dir(), f"{package} missing from the layer"
    assert list((layer / "pydantic_core").glob(f"*cpython-{_runtime().removeprefix('python').replace('.', '')}*.so"))
    for package in ("uvicorn", "typer", "pgserver", "rich"):
        assert not (layer / package).exists(), f"{package} is local-only and must not ship in the layer"
    # And every function is its thin app.py
    template = load_template()
    for name in resources_of_type(template, "AWS::Serverless::Function"):
        assert (build.dir / name / "app.py").is_file(), name


SMOKE = textwrap.dedent(
    """
    import importlib.util, json, sys

    layer, functions, events, names = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    scheduled = json.loads(sys.argv[5])  # function -> its events/schedule sample
    sys.path.insert(0, layer)

    class Context:
        function_name = "smoke"
        function_version = "$LATEST"
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:smoke"
        memory_limit_in_mb = 512
        aws_request_id = "00000000-0000-0000-0000-000000000000"
        log_group_name = "/aws/lambda/smoke"
        log_stream_name = "smoke"
        def get_remaining_time_in_millis(self):
            return 29000

    def load(name):
        spec = importlib.util.spec_from_file_location(f"fn_{name}", f"{functions}/{name}/app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.handler

    def event(name):
        with open(f"{events}/{name}.json") as f:
            return json.load(f)

    out = {}
    for name in names:
        load(name)
    health = load("HealthFunction")
    out["health"] = health(event("http/health_get"), Context())
    out["openapi"] = health(event("http/health_openapi"), Context())
    no_token = event("authorizer/request")
    no_token["headers"].pop("authorization")
    out["authorizer"] = load("AuthorizerFunction")(no_token, Context())
    out["scheduled"] = {}
    for name, sample in scheduled.items():
        try:
            load(name)(event(sample), Context())
            out["scheduled"][name] = "no error"
        except Exception as exc:  # a failed run must raise: Lambda retries it, then the queue gets it
            out["scheduled"][name] = type(exc).__name__
    out["boto3_from_layer"] = __import__("boto3").__file__.startswith(layer)
    print("SMOKE=" + json.dumps(out))
    """
)


def test_built_functions_run_on_the_layer_alone(build: Build, sam_env: dict[str, str], tmp_path: Path) -> None:
    # Given the runtime's interpreter with no site-packages: only the stdlib, the layer and the function
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE, encoding="utf-8")
    env = {"PATH": sam_env["PATH"], "HOME": str(tmp_path), "POWERTOOLS_TRACE_DISABLED": "1", "LANG": "C.UTF-8"}
    layer = build.dir / "SharedLayer" / "python"
    functions = resources_of_type(load_template(), "AWS::Serverless::Function")
    names = sorted(functions)
    scheduled = {
        name: f"schedule/{str(fn['Properties']['CodeUri']).removeprefix('functions/').rstrip('/')}"
        for name, fn in functions.items()
        if any(ev["Type"] == "Schedule" for ev in (fn["Properties"].get("Events") or {}).values())
    }
    assert scheduled, "the template has scheduled functions"

    # When every built function is imported; health, the OpenAPI document, the authorizer and the
    # scheduled jobs run
    args = [str(layer), str(build.dir), str(ROOT / "events"), json.dumps(names), json.dumps(scheduled)]
    result = subprocess.run(
        [_runtime(), "-S", "-I", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then they import, and answer: no database configured is a 503, not a crash
    assert result.returncode == 0, result.stderr[-5000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("SMOKE="))
    out = json.loads(line.removeprefix("SMOKE="))
    assert out["health"]["statusCode"] == 503
    assert json.loads(out["health"]["body"])["database"] == "unavailable"
    assert out["openapi"]["statusCode"] == 200
    paths = json.loads(out["openapi"]["body"])["paths"]
    assert "/api/v1/contracts/{contract_id}/tasks/{task_id}/status" in paths, "the whole API, not just health"
    assert out["authorizer"] == {"isAuthorized": False}
    # And a scheduled job without its database fails the invocation (no silent success)
    assert out["scheduled"] == dict.fromkeys(scheduled, "DatabaseUnavailable")
    assert out["boto3_from_layer"] is True


# What SAM makes of the template (aws-sam-translator, offline): the IAM roles of the functions.
TRANSFORM = textwrap.dedent(
    """
    import json, sys
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        def load(self):
            return {}

    with open(sys.argv[1], encoding="utf-8") as f:
        template = yaml_parse(f.read())
    for resource in template["Resources"].values():  # local code paths become what sam package makes them
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://bucket/key.zip"
    out = transform(template, {}, NoManagedPolicies())
    print(json.dumps({k: v for k, v in out["Resources"].items() if v["Type"] == "AWS::IAM::Role"}, default=str))
    """
)


def test_scheduled_functions_may_send_only_to_their_own_queue(sam_env: dict[str, str], tmp_path: Path) -> None:
    # Given the roles SAM generates for the functions
    script = tmp_path / "transform.py"
    script.write_text(TRANSFORM, encoding="utf-8")
    env = {**sam_env, "AWS_DEFAULT_REGION": "eu-west-1"}
    result = _run([str(SAM.parent / "python"), str(script), str(TEMPLATE)], env, 120)
    assert result.returncode == 0, result.stderr[-5000:]
    roles = json.loads(result.stdout)
    functions = resources_of_type(load_template(), "AWS::Serverless::Function")

    for name, fn in functions.items():
        role = roles[f"{name}Role"]["Properties"]
        inline = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        props = fn["Properties"]
        on_failure = ((props.get("EventInvokeConfig") or {}).get("DestinationConfig") or {}).get("OnFailure")
        queue = on_failure["Destination"] if on_failure else (props.get("DeadLetterQueue") or {}).get("TargetArn")
        # Then every function has the shared policy, and one with a dead-letter queue may also send to
        # it: sqs:SendMessage on that queue, nothing else
        assert {"Ref": "FunctionAccessPolicy"} in role["ManagedPolicyArns"], name
        if queue is None:
            assert inline == [], name
        else:
            assert inline == [{"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": queue}], name
