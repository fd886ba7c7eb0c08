"""The SAM tools the infrastructure tests run: the SAM CLI, aws-sam-translator and cfn-lint, all from
their own virtual environment ``.venv-sam`` (``make install``), never the application's.

Without them the tests that need them are skipped, unless ``MAKIMA_REQUIRE_SAM`` is set (CI, ``make
infra``, ``make test``), which makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.infra.cfn import ROOT, TEMPLATE, load_template

SAM_BIN = ROOT / ".venv-sam" / "bin"
SAM = SAM_BIN / "sam"
SAM_PYTHON = SAM_BIN / "python"
CFN_LINT = SAM_BIN / "cfn-lint"
# The region the offline transform pretends to run in (SAM builds some ARNs with it).
REGION = "eu-west-1"


def unavailable(reason: str) -> NoReturn:
    # Deliberate: a developer running pytest without the SAM CLI installed gets a skip with the reason;
    # `make test` and CI set MAKIMA_REQUIRE_SAM=1 (and install .venv-sam), where it is a failure instead.
    if os.environ.get("MAKIMA_REQUIRE_SAM"):
        pytest.fail(f"{reason} (MAKIMA_REQUIRE_SAM is set)")
    pytest.skip(f"{reason}; run `make install`, or set MAKIMA_REQUIRE_SAM=1 to make this a failure")


def runtime() -> str:
    value = load_template()["Parameters"]["Runtime"]["Default"]
    assert isinstance(value, str)
    return value  # e.g. "python3.12"


def _runs_as(executable: Path, wanted: str) -> bool:
    """True when ``executable`` really is ``wanted`` (a pyenv shim may exist and fail to run)."""
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
    return result.returncode == 0 and result.stdout.strip() == wanted


def interpreter_dir(wanted: str) -> Path | None:
    """A directory holding a working ``python3.X`` for ``wanted``: sam build looks it up on PATH."""
    candidates: list[Path] = []
    found = shutil.which(wanted)
    if found:
        candidates.append(Path(found))
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    version = wanted.removeprefix("python")
    candidates += sorted(pyenv_root.glob(f"versions/{version}.*/bin/{wanted}"), reverse=True)
    return next((c.parent for c in candidates if _runs_as(c, wanted)), None)


def tools_env() -> dict[str, str]:
    """The environment the SAM tools run in (the tools must exist)."""
    for tool in (SAM, SAM_PYTHON, CFN_LINT):
        if not tool.exists():
            unavailable(f"{tool.relative_to(ROOT)} is not installed")
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": REGION}


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


# What SAM makes of the template (aws-sam-translator, offline), as `sam deploy` would hand it to
# CloudFormation: local code paths become the S3 locations `sam package` gives them; the managed-policy
# loader is never asked (the template names its policies by reference, not by AWS managed name).
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
    parameters = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    for resource in template["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://bucket/key.zip"
    out = transform(template, parameters, NoManagedPolicies())
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, default=str)
    """
)


def translate(env: dict[str, str], work: Path, parameters: dict[str, str] | None = None) -> Path:
    """Translate template.yaml to CloudFormation JSON in ``work``, with the deploy's ``parameters`` (the
    ones SAM itself resolves; defaults otherwise) as CloudFormation hands them to the transform;
    returns the JSON file."""
    script = work / "transform.py"
    script.write_text(TRANSFORM, encoding="utf-8")
    out = work / "template.json"
    args = [str(SAM_PYTHON), str(script), str(TEMPLATE), str(out), json.dumps(parameters or {})]
    result = run(args, env, 120)
    assert result.returncode == 0, result.stderr[-5000:]
    return out


def load_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data
