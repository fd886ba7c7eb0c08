"""A program under test run as a real OS process whose stdout is JSON lines (one event each), collected
as they come: the reference supervisor (test_supervisor_restore.py) and the LangGraph example
(test_langgraph_example.py) both report their steps this way, and both tests kill and wait on them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self


@dataclass
class EventLinesProcess:
    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    # how a failure names it ("the supervisor", "the agent")
    who: str = "the process"

    @classmethod
    def launch(cls, cmd: Sequence[str], env: dict[str, str], *, who: str, cwd: Path | None = None) -> Self:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        process = cls(proc, who=who)
        threading.Thread(target=process._read, daemon=True).start()
        return process

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "line": line.rstrip()}
            self.events.append(event)
            self.lines.put(event)

    def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.lines.get(timeout=timeout)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def finish(self, timeout: float = 45.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.who} did not finish in {timeout}s: {self.events[-20:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
