"""Phase completion gates (seed Task 2.1): what a phase needs before it may advance, and the pure
evaluation of a contract's current phase against it.

A gate names required deliverables, a task requirement, an optional custom validator (a registered
callable, named in the type's configuration, never code from a request) and whether the phase
auto-advances. Evaluation returns every missing item in words a person can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from makima.domain.bounds import INT4_MAX
from makima.domain.strict import NO_BOOL, Bool


class TaskRequirementKind(StrEnum):
    NONE = "none"
    ALL_COMPLETE = "all_complete"
    MIN_COMPLETE = "min_complete"
    NAMED = "named"


class TaskRequirement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    require: TaskRequirementKind = TaskRequirementKind.NONE
    count: Annotated[int, Field(ge=1, le=INT4_MAX), NO_BOOL] | None = Field(
        default=None, description="For min_complete."
    )
    names: tuple[str, ...] = Field(default=(), description="For named.")

    @model_validator(mode="after")
    def _shape(self) -> TaskRequirement:
        if self.require is TaskRequirementKind.MIN_COMPLETE and self.count is None:
            raise ValueError("tasks.require = min_complete needs a count")
        if self.require is TaskRequirementKind.NAMED and not self.names:
            raise ValueError("tasks.require = named needs names")
        return self


class PhaseGate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # None means "every deliverable of the phase"; [] means "no deliverable is required".
    required_deliverables: tuple[str, ...] | None = None
    tasks: TaskRequirement = TaskRequirement()
    validator: str | None = Field(default=None, description="Name of a registered custom validator.")
    auto_advance: Bool = True


class Readiness(StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"
    NO_GATE = "no_gate"


@dataclass(frozen=True)
class TaskView:
    """What a gate needs to know of a task."""

    name: str
    status: str


@dataclass(frozen=True)
class PhaseSnapshot:
    """Everything a gate may look at, gathered by the caller in its transaction."""

    contract_type: str
    phase: str
    phase_deliverables: tuple[tuple[str, str], ...]  # (id, name) of the phase's deliverables, in order
    completed_deliverables: frozenset[str]  # ids completed in this phase
    tasks: tuple[TaskView, ...]  # the non-supervisor tasks spawned in this phase
    pending_questions: int = 0


@dataclass(frozen=True)
class ReadinessResult:
    status: Readiness
    missing: list[str] = field(default_factory=list)
    auto_advance: bool = False

    @property
    def ready(self) -> bool:
        return self.status is Readiness.READY


Validator = Callable[[PhaseSnapshot], list[str]]
_VALIDATORS: dict[str, Validator] = {}


def register_validator(name: str) -> Callable[[Validator], Validator]:
    """Register a custom gate validator under ``name``. It returns the missing items (empty when satisfied)."""

    def wrap(fn: Validator) -> Validator:
        _VALIDATORS[name] = fn
        return fn

    return wrap


def validator_names() -> list[str]:
    return sorted(_VALIDATORS)


def get_validator(name: str) -> Validator:
    try:
        return _VALIDATORS[name]
    except KeyError:
        raise ValueError(f"unknown gate validator {name!r}; registered: {validator_names()}") from None


@register_validator("no_pending_questions")
def _no_pending_questions(s: PhaseSnapshot) -> list[str]:
    n = s.pending_questions
    return [] if n == 0 else [f"{n} question{'s' if n != 1 else ''} unanswered"]


@register_validator("no_failed_tasks")
def _no_failed_tasks(s: PhaseSnapshot) -> list[str]:
    failed = [t.name for t in s.tasks if t.status == "failed"]
    return [f"Task failed: {', '.join(failed)}"] if failed else []


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _task_missing(req: TaskRequirement, tasks: tuple[TaskView, ...]) -> list[str]:
    done = [t for t in tasks if t.status == "completed"]
    if req.require is TaskRequirementKind.NONE:
        return []
    if req.require is TaskRequirementKind.ALL_COMPLETE:
        open_ = [t.name for t in tasks if t.status != "completed"]
        return [f"{_plural(len(open_), 'task')} incomplete: {', '.join(open_)}"] if open_ else []
    if req.require is TaskRequirementKind.MIN_COMPLETE:
        need = req.count or 0
        short = need - len(done)
        return [f"{_plural(short, 'more task')} to complete ({len(done)} of {need} done)"] if short > 0 else []
    done_names = {t.name for t in done}
    missing = [n for n in req.names if n not in done_names]
    return [f"Task: {n}" for n in missing]


def evaluate(gate: PhaseGate | None, snapshot: PhaseSnapshot) -> ReadinessResult:
    """Evaluate ``snapshot`` against ``gate``. Pure: the caller decides what readiness triggers."""
    if gate is None:
        return ReadinessResult(Readiness.NO_GATE)
    names = dict(snapshot.phase_deliverables)
    required = gate.required_deliverables if gate.required_deliverables is not None else tuple(names)
    missing = [f"Deliverable: {d}" for d in required if d not in snapshot.completed_deliverables]
    missing += _task_missing(gate.tasks, snapshot.tasks)
    if gate.validator:
        missing += get_validator(gate.validator)(snapshot)
    status = Readiness.NOT_READY if missing else Readiness.READY
    return ReadinessResult(status, missing, gate.auto_advance)


@dataclass(frozen=True)
class PhaseMove:
    """What a requested phase change would skip over: the unmet items of the current phase's gate (for a
    forward move) and an ordering problem (a phase skipped, or a move back). Empty ``missing`` means the
    move is allowed without an override."""

    current: str
    target: str
    next_phase: str | None
    backwards: bool
    missing: list[str]

    @property
    def allowed(self) -> bool:
        return not self.missing


def phase_move(phase_ids: list[str], current: str, target: str, readiness: ReadinessResult) -> PhaseMove:
    """Judge a manual move from ``current`` to ``target`` (both phases of ``phase_ids``, in order).

    Forward, a phase is left only through its gate, as auto-advance would leave it: the gate's missing
    items are the move's. Only the next phase may be entered: a skip is missing "the next phase first",
    naming it. A move back needs no gate (nothing is being declared done) but is never routine, so it
    is missing "an override" too. Pure: the caller decides who may override.
    """
    i, j = phase_ids.index(current), phase_ids.index(target)
    nxt = phase_ids[i + 1] if i + 1 < len(phase_ids) else None
    if j < i:
        return PhaseMove(
            current, target, nxt, True, [f"Phase: {target} comes before {current}; moving back needs force"]
        )
    missing = list(readiness.missing)
    if j > i + 1:
        missing.append(f"Phase: {nxt} comes next; {target} cannot be entered before it")
    return PhaseMove(current, target, nxt, False, missing)
