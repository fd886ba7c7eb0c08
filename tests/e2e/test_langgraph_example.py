"""``examples/langgraph_agent.py`` end to end (issue 18): a LangGraph agent checkpointed by
``MakimaCheckpointSaver`` works a contract against the local stack, is killed with SIGKILL in the middle
of its work, and a second process resumes the same thread from its last checkpoint and finishes.

What it proves, from the agent's output and from what makima records:

- the second process resumed (the thread's checkpoint held the first process's messages) and ran only
  the steps after the kill: each step ran in exactly one process, and the final state holds each tool
  call once;
- the work is done once: the contract is completed, each deliverable was marked once (one
  ``deliverable_completed`` event each), each task exists once;
- makima saw the takeover: the supervisor was restored under generation 2 (a ``supervisor_restored``
  event after the kill), and a checkpoint under the first process's generation is refused from then on.

The agent is a real OS process (``python examples/langgraph_agent.py``) with a daemon token of the
contract's owner in ``MAKIMA_TOKEN``, as a supervisor host would run it.
"""

from __future__ import annotations

import base64
import os
import queue
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

import makima
from tests.e2e.conftest import Stack
from tests.e2e.processes import EventLinesProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "langgraph_agent.py"
LAYER = str(Path(makima.__file__).resolve().parents[1])  # this checkout's package, for the subprocess
# The "simple" type: plan (1 deliverable) then execute (2); a task per phase, opened and completed.
STEPS = [
    ("open_task", "plan-work"),
    ("mark_deliverable", "plan/plan-document"),
    ("complete_task", "plan-work"),
    ("open_task", "execute-work"),
    ("mark_deliverable", "execute/implementation"),
    ("mark_deliverable", "execute/pull-request"),
    ("complete_task", "execute-work"),
]
KILL_AFTER = 4  # in the execute phase: its task open, none of its deliverables marked


class Agent(EventLinesProcess):
    """``examples/langgraph_agent.py`` as a process, its JSON lines collected as they come."""

    @classmethod
    def start(cls, stack: Stack, token: str, *args: str) -> Agent:
        cmd = [sys.executable, str(EXAMPLE), "--api-url", stack.base_url, *args]
        env = {**os.environ, "MAKIMA_TOKEN": token, "PYTHONPATH": LAYER}
        return cls.launch(cmd, env, who="the agent", cwd=ROOT)

    def wait_for(self, kind: str, timeout: float = 60.0) -> dict[str, Any]:
        while True:
            try:
                event = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {kind!r} from the agent in {timeout}s: {self.events[-20:]}") from None
            if event["event"] == kind:
                return event

    def finish(self, timeout: float = 90.0) -> int:
        return super().finish(timeout)


def ok(r: httpx.Response) -> Any:
    assert r.status_code < 300, r.text
    return r.json()


def test_killed_langgraph_agent_resumes_from_its_last_checkpoint_and_finishes_the_contract(stack: Stack) -> None:
    # Given: an owner with a person's token and a daemon token, and a contract of the "simple" type
    with stack.client() as admin:
        user = ok(admin.post("/users", json={"name": f"langgraph-{uuid.uuid4().hex[:8]}"}))
        person = ok(admin.post(f"/users/{user['id']}/tokens", json={"kind": "user"}))["token"]
        daemon = ok(admin.post(f"/users/{user['id']}/tokens", json={"kind": "daemon"}))["token"]
    with stack.client(person) as http:
        cid = ok(http.post("/contracts", json={"name": "langgraph example", "contract_type": "simple"}))["id"]
        thread = f"e2e-{uuid.uuid4().hex[:8]}"
        common = ("--contract-id", cid, "--thread-id", thread)

        # When: the agent works the contract and blocks before step 5; it is killed there (SIGKILL)
        first = Agent.start(stack, daemon, *common, "--hang-after", str(KILL_AFTER))
        try:
            hanging = first.wait_for("hanging")
            assert hanging["before_step"] == KILL_AFTER + 1
            mid = ok(http.get(f"/contracts/{cid}"))
            before_kill = ok(http.get(f"/contracts/{cid}/supervisor/status"))
            os.kill(first.proc.pid, signal.SIGKILL)
            assert first.proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            first.stop()
        assert [e["step"] for e in first.of("step")] == list(range(1, KILL_AFTER + 1))
        assert first.of("start")[0]["resumed"] is False
        assert (mid["status"], mid["phase"]) == ("active", "execute")  # half way: plan done, execute open
        assert before_kill["generation"] == 1

        # ... and a second process resumes the same thread
        second = Agent.start(stack, daemon, *common)
        try:
            assert second.finish() == 0, second.events[-20:]
        finally:
            second.stop()

    # Then: it resumed from the last checkpoint: the first process's 4 steps and the reply deciding step 5
    start = second.of("start")[0]
    assert start["resumed"] is True
    assert start["checkpoint_messages"] == 1 + 2 * KILL_AFTER + 1
    # ... and ran only the steps after the kill: each step ran in exactly one process
    assert [e["step"] for e in second.of("step")] == list(range(KILL_AFTER + 1, len(STEPS) + 1))
    assert [e["tool"] for e in first.of("step") + second.of("step")] == [tool for tool, _ in STEPS]
    done = second.of("done")[0]
    assert done["steps_here"] == list(range(KILL_AFTER + 1, len(STEPS) + 1))
    # the final state: the request, each step's call and result once, the final answer
    assert done["messages"] == 1 + 2 * len(STEPS) + 1
    assert done["tool_calls"] == [f"call-{k}" for k in range(1, len(STEPS) + 1)]

    # ... the work is done, and done once, as makima records it
    with stack.client(person) as http:
        contract = ok(http.get(f"/contracts/{cid}"))
        assert contract["status"] == "completed"
        assert done["contract_status"] == "completed"
        phases = ok(http.get(f"/contracts/{cid}/deliverables"))["phases"]
        assert all(d["completed"] for p in phases for d in p["deliverables"])
        events = ok(http.get(f"/contracts/{cid}/events", params={"limit": 1000}))["events"]
        marked = Counter(
            f"{e['payload']['phase']}/{e['payload']['deliverable_id']}"
            for e in events
            if e["type"] == "deliverable_completed"
        )
        assert marked == Counter(target for tool, target in STEPS if tool == "mark_deliverable")
        tasks = ok(http.get(f"/contracts/{cid}/tasks"))["tasks"]
        work = Counter(t["name"] for t in tasks if not t["is_supervisor"])
        assert work == Counter({"plan-work": 1, "execute-work": 1})
        assert all(t["status"] == "completed" for t in tasks if not t["is_supervisor"])

        # ... and the takeover: the supervisor restored once, under generation 2, after the kill
        supervisor = ok(http.get(f"/contracts/{cid}/supervisor/status"))
        assert supervisor["generation"] == 2
        assert supervisor["task_id"] == before_kill["task_id"]
        restores = [e for e in events if e["type"] == "supervisor_restored"]
        assert len(restores) == 1, restores
        assert restores[0]["payload"]["generation"] == 2
        # the killed process's generation is superseded: its next checkpoint would be refused, and stored
        # nothing (the thread's newest checkpoint is still the second process's last)
        newest = ok(http.get("/checkpoints/tuple", params={"thread_id": thread}))
    with stack.client(daemon) as agent_http:
        zombie = agent_http.put(
            "/checkpoints",
            json={
                "thread_id": thread,
                "checkpoint_ns": "",
                "checkpoint_id": "ffffffff-ffff-6fff-bfff-ffffffffffff",  # newer than any uuid6 of today
                "parent_checkpoint_id": newest["checkpoint_id"],
                "type": "json",
                "checkpoint": base64.b64encode(b"{}").decode(),
                "metadata": {"source": "loop", "step": 99},
                "contract_id": cid,
                "generation": 1,
            },
        )
        assert zombie.status_code == 409, zombie.text
        assert zombie.json()["error"]["details"]["reason"] == "superseded"
        after = ok(agent_http.get("/checkpoints/tuple", params={"thread_id": thread}))
        assert after["checkpoint_id"] == newest["checkpoint_id"]
