"""Task statuses and their transitions: pending -> running -> completed | failed."""

from __future__ import annotations

from enum import StrEnum

from makima.errors import InvalidTransition


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


T = TaskStatus

# A pending task may finish without ever being seen running (a fast task whose start report was
# lost); a finished task never moves again.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.PENDING: frozenset({T.RUNNING, T.COMPLETED, T.FAILED}),
    T.RUNNING: frozenset({T.COMPLETED, T.FAILED}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
}

FINISHED: frozenset[TaskStatus] = frozenset({T.COMPLETED, T.FAILED})


def check_task_transition(current: TaskStatus, new: TaskStatus) -> None:
    if new not in TASK_TRANSITIONS[current]:
        raise InvalidTransition(
            f"cannot change task status from {current.value} to {new.value}",
            {"from": current.value, "to": new.value, "allowed": sorted(TASK_TRANSITIONS[current])},
        )
