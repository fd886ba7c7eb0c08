"""Seed Phase 2's must-show: a specification contract driven from creation to completed purely by
completing deliverables and tasks over HTTP against the local stack, with the phase guard off and on."""

from __future__ import annotations

import pytest

from makima.domain.contract_types import builtin_types
from tests.drivers import Driver
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e
SPEC = next(t for t in builtin_types() if t.name == "specification")


def test_specification_contract_runs_to_completed_by_itself(stack: Stack) -> None:
    with stack.client() as http:
        d = Driver(http, {}, "specification", prefix="")
        d.start()
        for phase in SPEC.phases:
            assert d.get()["phase"] == phase.id
            tid = d.task(f"{phase.id}-work")
            for deliverable in phase.deliverables:
                d.deliver(deliverable.id)
            d.finish(tid)
        final = d.get()
        assert (final["status"], final["phase"]) == ("completed", "review")
        moves = [
            (e["payload"]["old_phase"], e["payload"]["new_phase"]) for e in d.events() if e["type"] == "phase_changed"
        ]
        assert moves == [("research", "specify"), ("specify", "plan"), ("plan", "execute"), ("execute", "review")]


def test_specification_contract_with_phase_guard_waits_at_each_phase(stack: Stack) -> None:
    with stack.client() as http:
        d = Driver(http, {}, "specification", prefix="", phase_guard=True)
        d.start()
        for i, phase in enumerate(SPEC.phases):
            tid = d.task(f"{phase.id}-work")
            for deliverable in phase.deliverables:
                d.deliver(deliverable.id)
            assert d.get()["status"] == "active"  # the task is still open
            d.finish(tid)
            held = d.get()
            assert held["status"] == "waiting_for_input"
            assert held["phase"] == phase.id
            if i + 1 < len(SPEC.phases):
                nxt = SPEC.phases[i + 1].id
                assert held["waiting_for"] == f"phase_confirmation:{nxt}"
                moved = d.post("/phase", {"phase": nxt, "expected_version": held["version"], "confirmed": True})
                assert (moved["status"], moved["phase"]) == ("active", nxt)
            else:
                assert held["waiting_for"] == "completion_confirmation"
                done = d.post("/check-completion", {"confirmed": True})
                assert done["contract"]["status"] == "completed"
        types = [e["type"] for e in d.events()]
        assert types.count("phase_ready") == 4
        assert types.count("completion_detected") >= 1
