"""``tests/bench/bench_langgraph.py --quick`` end to end: the benchmark `make bench` runs keeps working as
the checkpointer and LangGraph change (a put the API now refuses, a recording of a graph step that no
longer holds the messages). Its figures are not judged here: the suite runs on the same cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.bench_langgraph import SAVERS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_bench_langgraph_quick_measures_both_savers_at_each_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [sys.executable, "-m", "tests.bench.bench_langgraph", "--quick", "--sizes", "10,50", "--json", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))["sizes"]
    assert set(results) == {"10", "50"}
    for size, r in results.items():
        for saver in SAVERS:
            assert r[saver]["rate"] > 0, (size, saver)
            assert 0 < r[saver]["p50_ms"] <= r[saver]["p95_ms"], (size, saver)
        assert r["ratio"] > 0, size
