"""``tests/bench/bench_api.py --quick`` end to end: the benchmark `make bench` relies on keeps working as
the code changes (a workload whose request the API now refuses, a replay that no longer does the same
work, a recording that no longer captures the statements). Its figures are not judged here: the floors
are `make bench`'s business, on a machine that is not running the rest of the suite meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.bench_api import FLOORS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_bench_api_quick_measures_every_workload_on_both_paths(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [sys.executable, "-m", "tests.bench.bench_api", "--quick", "--json", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["facts"]["client"] == "stdlib"
    results = document["workloads"]
    assert set(results) == set(FLOORS)
    for key, r in results.items():
        assert r["api_rate"] > 0, key
        assert r["raw_rate"] > 0, key
        assert r["ratio"] > 0, key
        assert 0 < r["p50_ms"] <= r["p95_ms"], key
        assert r["statements_per_request"] >= 1, key
        assert r["client_cpu_ms"] > 0, key
