"""Seed Task 2.1: phase completion gates, evaluated purely."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from makima.domain.contract_types import ContractTypeDefinition, builtin_types
from makima.domain.gates import (
    PhaseGate,
    PhaseSnapshot,
    Readiness,
    ReadinessResult,
    TaskRequirement,
    TaskView,
    evaluate,
    phase_move,
    register_validator,
)

pytestmark = pytest.mark.unit


def snap(
    deliverables: tuple[str, ...] = ("spec", "review"),
    done: tuple[str, ...] = (),
    tasks: tuple[tuple[str, str], ...] = (),
    pending_questions: int = 0,
) -> PhaseSnapshot:
    return PhaseSnapshot(
        contract_type="t",
        phase="p",
        phase_deliverables=tuple((d, d.title()) for d in deliverables),
        completed_deliverables=frozenset(done),
        tasks=tuple(TaskView(n, s) for n, s in tasks),
        pending_questions=pending_questions,
    )


def test_no_gate() -> None:
    r = evaluate(None, snap())
    assert r.status is Readiness.NO_GATE
    assert not r.ready


def test_gate_with_all_deliverables_required() -> None:
    gate = PhaseGate()
    assert evaluate(gate, snap(done=("spec",))).missing == ["Deliverable: review"]
    assert evaluate(gate, snap(done=("spec", "review"))).ready


def test_gate_with_some_deliverables_required() -> None:
    gate = PhaseGate(required_deliverables=("spec",))
    assert evaluate(gate, snap(done=("spec",))).ready
    assert evaluate(PhaseGate(required_deliverables=()), snap()).ready


@pytest.mark.parametrize(
    ("requirement", "tasks", "missing"),
    [
        (TaskRequirement(), (("a", "running"),), []),
        (TaskRequirement(require="all_complete"), (), []),
        (TaskRequirement(require="all_complete"), (("a", "completed"), ("b", "running")), ["1 task incomplete: b"]),
        (
            TaskRequirement(require="all_complete"),
            (("write-tests", "pending"), ("docs", "failed")),
            ["2 tasks incomplete: write-tests, docs"],
        ),
        (
            TaskRequirement(require="min_complete", count=2),
            (("a", "completed"),),
            ["1 more task to complete (1 of 2 done)"],
        ),
        (TaskRequirement(require="min_complete", count=2), (("a", "completed"), ("b", "completed")), []),
        (
            TaskRequirement(require="named", names=("lint", "test")),
            (("lint", "completed"), ("test", "running")),
            ["Task: test"],
        ),
        (TaskRequirement(require="named", names=("lint",)), (("lint", "completed"), ("x", "failed")), []),
    ],
)
def test_task_requirements(
    requirement: TaskRequirement, tasks: tuple[tuple[str, str], ...], missing: list[str]
) -> None:
    gate = PhaseGate(required_deliverables=(), tasks=requirement)
    assert evaluate(gate, snap(tasks=tasks)).missing == missing


def test_mixed_deliverables_tasks_and_validator_report_every_missing_item() -> None:
    gate = PhaseGate(tasks=TaskRequirement(require="all_complete"), validator="no_pending_questions")
    r = evaluate(gate, snap(done=("spec",), tasks=(("write-tests", "running"),), pending_questions=2))
    assert r.status is Readiness.NOT_READY
    assert r.missing == ["Deliverable: review", "1 task incomplete: write-tests", "2 questions unanswered"]


def test_custom_validators_are_registered_callables() -> None:
    @register_validator("test_needs_three_tasks")
    def three(s: PhaseSnapshot) -> list[str]:
        return [] if len(s.tasks) >= 3 else ["Three tasks needed"]

    gate = PhaseGate(required_deliverables=(), validator="test_needs_three_tasks")
    assert evaluate(gate, snap()).missing == ["Three tasks needed"]


def test_task_requirement_shapes_are_checked() -> None:
    with pytest.raises(ValidationError):
        TaskRequirement(require="min_complete")
    with pytest.raises(ValidationError):
        TaskRequirement(require="named")


def test_a_type_whose_gate_names_unknown_deliverables_or_validators_is_refused() -> None:
    base = {"name": "custom", "phases": [{"id": "only", "name": "Only", "deliverables": [{"id": "a", "name": "A"}]}]}
    bad_deliverable = {**base, "phases": [{**base["phases"][0], "gate": {"required_deliverables": ["b"]}}]}  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="unknown deliverables"):
        ContractTypeDefinition.model_validate(bad_deliverable)
    bad_validator = {**base, "phases": [{**base["phases"][0], "gate": {"validator": "os.system"}}]}  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="unknown gate validator"):
        ContractTypeDefinition.model_validate(bad_validator)


def test_every_builtin_phase_has_a_gate() -> None:
    for t in builtin_types():
        for p in t.phases:
            assert p.gate is not None, f"{t.name}.{p.id}"
            assert p.gate.auto_advance


# --- manual phase changes (issue 17: VALIDATION_FAILED with missing_requirements) ------------------------

PHASES = ["research", "specify", "plan"]


def _result(*missing: str) -> ReadinessResult:
    return ReadinessResult(Readiness.NOT_READY if missing else Readiness.READY, list(missing))


def test_a_move_to_the_next_phase_needs_only_the_gate() -> None:
    assert phase_move(PHASES, "research", "specify", _result()).allowed
    blocked = phase_move(PHASES, "research", "specify", _result("Deliverable: notes"))
    assert (blocked.allowed, blocked.missing, blocked.next_phase) == (False, ["Deliverable: notes"], "specify")


def test_a_phase_gate_without_requirements_lets_the_next_phase_in() -> None:
    assert phase_move(PHASES, "specify", "plan", ReadinessResult(Readiness.NO_GATE)).allowed


def test_a_skip_names_the_phase_that_comes_next() -> None:
    move = phase_move(PHASES, "research", "plan", _result())
    assert move.missing == ["Phase: specify comes next; plan cannot be entered before it"]
    assert phase_move(PHASES, "research", "plan", _result("Task: x")).missing == [
        "Task: x",
        "Phase: specify comes next; plan cannot be entered before it",
    ]


def test_a_move_back_needs_force_whatever_the_gate() -> None:
    move = phase_move(PHASES, "plan", "research", _result())
    assert (move.backwards, move.missing) == (True, ["Phase: research comes before plan; moving back needs force"])
