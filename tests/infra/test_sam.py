"""The SAM tools accept the template, and ``sam build`` produces a layer the functions can run on.

- ``sam validate --lint``: the SAM template, with cfn-lint's SAM-aware rules.
- cfn-lint on the CloudFormation JSON that aws-sam-translator makes of it (what CloudFormation
  receives): no error and no warning; a rule ignored here is listed in ``IGNORED_CHECKS`` with why.
- ``sam build``: the layer holds the package and its pinned dependencies for the runtime, built for
  each architecture (``Architecture``: every compiled file's ELF machine and every wheel's tag are that
  architecture's), and every built function imports and answers from the layer alone, on x86_64 and on
  aarch64 (``tests/infra/builds.py``: the functions are built once, the layer once per architecture).

Needs ``.venv-sam`` (``make install``) and, for the build, the runtime's interpreter (python3.12 by
default) on PATH or under pyenv; ``sam build`` also needs the package registry. Without them these
tests are skipped, unless ``MAKIMA_REQUIRE_SAM`` is set (``tests/infra/sam.py``). On an x86_64 machine
the arm64 layer is imported by an aarch64 CPython under qemu's user-mode emulator (``make install``:
``tests/infra/aarch64_python.sh``); that CPython is 3.13, so that layer is also built for python3.13 and
that interpreter is needed on the machine too (pyenv).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.infra import sam
from tests.infra.builds import ELF_MACHINE, HOST, WHEEL_PLATFORM, Builds, elf_files, interpreter, wheel_tags
from tests.infra.cfn import ROOT, TEMPLATE, http_functions, load_template, resources_of_type
from tests.infra.sam import CFN_LINT, SAM, load_json, run, runtime, translate

pytestmark = pytest.mark.infra

# cfn-lint rules not applied to the translated template, each with its reason. (None today; the
# informational I-rules are not run at all.)
IGNORED_CHECKS: dict[str, str] = {}
# Parameters SAM's transform consumes itself: CloudFormation hands the transform the deploy's parameter
# values, and what comes out holds the value, no longer a Ref (cfn-lint then calls them unused, W2001).
# test_deployment_type_reaches_codedeploy shows each is used.
RESOLVED_BY_THE_TRANSFORM = {"DeploymentType"}
# The aarch64 CPython `make install` provides on an x86_64 machine (tests/infra/aarch64_python.sh says why
# it is not the default runtime's): the arm64 layer built for it is imported under emulation.
EMULATED_RUNTIME = "python3.13"
# Known compiled extensions of the layer, each of which must be there for the architecture it was built for.
EXTENSIONS = ("pydantic_core/_pydantic_core", "psycopg_binary/_psycopg", "psycopg_binary/pq", "yaml/_yaml")


@pytest.fixture(scope="session")
def builds(sam_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Builds:
    return Builds(sam_env, tmp_path_factory.mktemp("sam"))


def test_sam_validate_lint(sam_tools: dict[str, str]) -> None:
    # When the SAM CLI validates the template with cfn-lint (offline: no --region needed with --lint)
    result = run([str(SAM), "validate", "--lint", "--template-file", str(TEMPLATE)], sam_tools, 300)

    # Then it is valid
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is a valid SAM Template" in output


def test_cfn_lint_passes_the_translated_template(sam_tools: dict[str, str], translated_path: Path) -> None:
    # When cfn-lint checks what CloudFormation would receive (errors and warnings; exit code 2 = an
    # error, 4 = a warning)
    ignore = [arg for rule in IGNORED_CHECKS for arg in ("--ignore-checks", rule)]
    result = run([str(CFN_LINT), "--format", "parseable", *ignore, "--", str(translated_path)], sam_tools, 300)

    # Then it finds nothing but the parameters the transform resolved, as unused
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    resolved = {f"W2001:Parameter {name} not used." for name in RESOLVED_BY_THE_TRANSFORM}
    assert [f for f in findings if not any(f.endswith(r) for r in resolved)] == [], result.stderr[-2000:]
    assert result.returncode in (0, 4), result.stdout[-8000:] + result.stderr[-2000:]


@pytest.mark.parametrize("deployment", ["Canary10Percent5Minutes", "AllAtOnce"])
def test_deployment_type_reaches_codedeploy(sam_tools: dict[str, str], tmp_path: Path, deployment: str) -> None:
    # Given the template translated as CloudFormation would for a deploy choosing DeploymentType
    translated = load_json(translate(sam_tools, tmp_path, {"DeploymentType": deployment}))

    # Then every HTTP function's deployment group shifts its alias that way
    groups = resources_of_type(translated, "AWS::CodeDeploy::DeploymentGroup")
    assert len(groups) == len(http_functions(load_template()))
    for name, group in groups.items():
        config = group["Properties"]["DeploymentConfigName"]["Fn::Sub"]
        assert config == ["CodeDeployDefault.Lambda${ConfigName}", {"ConfigName": deployment}], name


def test_sam_build_makes_the_layer_and_every_function(builds: Builds) -> None:
    # Given a finished sam build of the template's defaults
    build = builds.default
    layer = build.layer
    print(f"sam build ({build.architecture}, everything) took {build.seconds:.1f}s")  # shown with -s

    # Then the layer holds the makima package where Lambda imports it (/opt/python/makima) ...
    assert (layer / "makima" / "__init__.py").is_file()
    assert (layer / "makima" / "lambda_support" / "http.py").is_file()
    assert list((layer / "makima" / "migrations").glob("*.sql")), "migrations ship with the package"
    assert list((layer / "makima" / "contract_types").glob("*.json")), "contract types ship with the package"
    # ... with its dependencies, built for the runtime, and without the local-only ones
    for package in ("fastapi", "mangum", "pydantic_core", "psycopg", "psycopg_binary", "aws_lambda_powertools"):
        assert (layer / package).is_dir(), f"{package} missing from the layer"
    assert list((layer / "pydantic_core").glob(f"*cpython-{runtime().removeprefix('python').replace('.', '')}*.so"))
    for package in ("uvicorn", "typer", "pgserver", "rich"):
        assert not (layer / package).exists(), f"{package} is local-only and must not ship in the layer"
    # ... nor the MCP SDK, which the MCP function's own layer brings (with httpx, its tools' client)
    assert not (layer / "mcp").exists()
    for package in ("mcp", "httpx", "mcp_types"):
        assert (build.mcp_layer / package).is_dir(), f"{package} missing from the MCP layer"
    shared_size, mcp_size = _size(layer), _size(build.mcp_layer)
    print(f"layers unpacked: shared {shared_size / 1e6:.1f} MB, mcp {mcp_size / 1e6:.1f} MB")
    # Lambda's limit is 250 MB unpacked for a function and all its layers
    assert shared_size + mcp_size < 200e6
    # And every function is its thin app.py, nothing compiled: the same files for every architecture
    template = load_template()
    for name in resources_of_type(template, "AWS::Serverless::Function"):
        assert (build.functions / name / "app.py").is_file(), name
        assert not elf_files(build.functions / name), f"{name} holds compiled code"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("architecture", sorted(ELF_MACHINE))
def test_the_layer_is_built_for_the_architecture(builds: Builds, architecture: str) -> None:
    # Given the layer built for an architecture (the defaults' build, or the layer alone for the other)
    build = builds.get(architecture, runtime())
    what = "everything" if build == builds.default else "the layer"
    print(f"sam build ({architecture}, {what}) took {build.seconds:.1f}s")

    # When every compiled file of it is read: its ELF header's machine, whatever the file's name
    compiled = elf_files(build.layer)
    names = {str(path.relative_to(build.layer)) for path in compiled}

    # Then the known extension modules are there, and every compiled file, the libraries the wheels
    # bundle (psycopg-binary's libpq, OpenSSL...) included, is for that architecture and no other
    for extension in EXTENSIONS:
        assert any(name.startswith(extension) and ".cpython-" in name for name in names), f"{extension} missing"
    wrong = {str(p.relative_to(build.layer)): m for p, m in compiled.items() if m != ELF_MACHINE[architecture]}
    assert not wrong, f"not {architecture} (e_machine {ELF_MACHINE[architecture]}): {wrong}"
    # And so is every compiled file of the MCP function's layer (cryptography, rpds-py, cffi...)
    mcp_compiled = elf_files(build.mcp_layer)
    assert mcp_compiled, "the MCP layer's compiled dependencies are missing"
    wrong = {str(p.relative_to(build.mcp_layer)): m for p, m in mcp_compiled.items() if m != ELF_MACHINE[architecture]}
    assert not wrong, f"MCP layer not {architecture} (e_machine {ELF_MACHINE[architecture]}): {wrong}"
    # And pip chose the wheels for it: each is pure Python (any platform) or built for this CPython on
    # this architecture (or for the stable ABI of an older one, abi3, which this CPython runs)
    python = "cp" + runtime().removeprefix("python").replace(".", "")
    binary = set()
    for layer in (build.layer, build.mcp_layer):
        for dist, tags in wheel_tags(layer).items():
            assert tags, f"{dist} has no wheel tag"
            for tag in tags:
                interpreter_tag, abi, platform_tag = tag.split("-")
                if platform_tag == "any":
                    continue
                assert abi in {python, "abi3"}, f"{dist}: {tag} is not for {python}"
                binary.add(dist.split("-")[0].lower())
                if abi == "abi3":
                    assert int(interpreter_tag[3:]) <= int(python[3:]), f"{dist}: {tag} is not for {python}"
                else:
                    assert interpreter_tag == python, f"{dist}: {tag} is not for {python}"
                assert platform_tag.endswith(WHEEL_PLATFORM[architecture]), f"{dist}: {tag} is not for {architecture}"
    assert {"pydantic_core", "psycopg_binary"} <= binary


SMOKE = textwrap.dedent(
    """
    import importlib.util, json, sys

    layer, functions, events, names = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    scheduled = json.loads(sys.argv[5])  # function -> its events/schedule sample
    mcp_layer = sys.argv[6]  # the MCP function's own layer, laid over the shared one for it alone
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
        if name != "McpFunction":
            load(name)
    health = load("HealthFunction")
    out["health"] = health(event("http/health_get"), Context())
    out["openapi"] = health(event("http/health_openapi"), Context())
    no_token = event("authorizer/request")
    no_token["headers"].pop("authorization")
    out["authorizer"] = load("AuthorizerFunction")(no_token, Context())
    page = load("WebFunction")(event("web/dashboard_page"), Context())
    out["dashboard"] = {"status": page["statusCode"], "type": page["headers"].get("content-type"),
                        "html": page["body"].lstrip().lower().startswith("<!doctype html")}
    out["scheduled"] = {}
    for name, sample in scheduled.items():
        try:
            load(name)(event(sample), Context())
            out["scheduled"][name] = "no error"
        except Exception as exc:  # a failed run must raise: Lambda retries it, then the queue gets it
            out["scheduled"][name] = type(exc).__name__
    out["boto3_from_layer"] = __import__("boto3").__file__.startswith(layer)
    # The MCP function last, on both its layers (as /opt/python holds them for it): without a token a
    # request is refused (401), and GET is refused (405) without reaching the API
    sys.path.insert(0, mcp_layer)
    mcp = load("McpFunction")
    anonymous = event("http/mcp_post")
    anonymous["headers"].pop("authorization")
    out["mcp"] = [mcp(anonymous, Context())["statusCode"], mcp(event("http/mcp_get"), Context())["statusCode"]]
    out["mcp_from_its_layer"] = __import__("mcp").__file__.startswith(mcp_layer)
    print("SMOKE=" + json.dumps(out))
    """
)


def _smoke_command(architecture: str, python: str) -> list[str]:
    """How to run ``python`` on ``architecture`` here; a failure under MAKIMA_REQUIRE_SAM (``make
    install`` provides both: the host's runtime, and an emulated aarch64 CPython on an x86_64 host)."""
    command = interpreter(architecture, python)
    if command is None:
        where = "on PATH nor under pyenv" if architecture == HOST else "under qemu-aarch64-static"
        sam.unavailable(f"no {architecture} {python} {where} (make install: tests/infra/aarch64_python.sh)")
    return command


# The emulated run alone takes one to two minutes on two cores (20 to 30 times the native one).
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("architecture", "python"),
    # The arm64 layer of the runtime itself (python3.12) has no aarch64 interpreter to run on here
    # (Debian ships none); its compiled files and wheel tags are held by
    # test_the_layer_is_built_for_the_architecture, and the same layer built for the emulated CPython runs.
    [("x86_64", runtime()), ("arm64", EMULATED_RUNTIME)],
    ids=lambda value: str(value),
)
def test_built_functions_run_on_the_layer_alone(
    builds: Builds, sam_env: dict[str, str], tmp_path: Path, architecture: str, python: str
) -> None:
    # Given the runtime's interpreter on the architecture (native, or aarch64 under qemu's user-mode
    # emulator), with no site-packages: only the stdlib, the layer built for them, and the function
    command = _smoke_command(architecture, python)
    build = builds.get(architecture, python)
    emulated = architecture != HOST
    if emulated:
        # Byte-compiled natively first (bytecode is the same on every processor): compiling the layer
        # under emulation would double the emulated run
        native = sam.interpreter_dir(python)
        assert native is not None, f"{python} built the layer, so it is here"
        args = [str(native / python), "-m", "compileall", "-q", "-j0", str(build.layer), str(build.functions)]
        args.append(str(build.mcp_layer))
        subprocess.run(args, capture_output=True, timeout=300, check=True)
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE, encoding="utf-8")
    env = {"PATH": sam_env["PATH"], "HOME": str(tmp_path), "POWERTOOLS_TRACE_DISABLED": "1", "LANG": "C.UTF-8"}
    functions = resources_of_type(load_template(), "AWS::Serverless::Function")
    names = sorted(functions)
    scheduled = {
        name: f"schedule/{str(fn['Properties']['CodeUri']).removeprefix('functions/').rstrip('/')}"
        for name, fn in functions.items()
        if any(ev["Type"] == "Schedule" for ev in (fn["Properties"].get("Events") or {}).values())
    }
    assert scheduled, "the template has scheduled functions"

    # When every built function is imported (the migration function included: importing it touches
    # nothing); health, the OpenAPI document, the authorizer, the dashboard page and the scheduled
    # jobs run
    args = [str(build.layer), str(build.functions), str(ROOT / "events"), json.dumps(names), json.dumps(scheduled)]
    args.append(str(build.mcp_layer))
    started = time.monotonic()
    result = subprocess.run(
        [*command, "-S", "-I", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900 if emulated else 120,
        check=False,
    )
    seconds = time.monotonic() - started
    print(f"the smoke run ({architecture}, {python}{', emulated' if emulated else ''}) took {seconds:.1f}s")

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
    # And the dashboard page comes from the layer too
    assert out["dashboard"] == {"status": 200, "type": "text/html; charset=utf-8", "html": True}
    # And a scheduled job without its database fails the invocation (no silent success)
    assert out["scheduled"] == dict.fromkeys(scheduled, "DatabaseUnavailable")
    assert out["boto3_from_layer"] is True
    # And the MCP function runs on its two layers: 401 without a token, 405 for the stream it has not
    assert out["mcp"] == [401, 405]
    assert out["mcp_from_its_layer"] is True
