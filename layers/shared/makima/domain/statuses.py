"""Contract statuses and the explicit table of allowed transitions (seed Task 1.4).

The first three statuses are the legacy ones; old clients that only know them keep working because
every new status maps onto one of them in ``LEGACY_STATUS`` (returned as ``legacy_status``).
"""

from __future__ import annotations

from enum import StrEnum

from makima.errors import InvalidTransition


class ContractStatus(StrEnum):
    # Legacy statuses, kept as-is.
    ACTIVE = "active"
    COMPLETED = "completed"
    ARCHIVED = "archived"
    # Added by the enhanced status tracking.
    CREATED = "created"
    WAITING_FOR_INPUT = "waiting_for_input"
    PAUSED = "paused"
    BLOCKED = "blocked"
    COMPLETING = "completing"
    FAILED = "failed"


S = ContractStatus

# Every allowed move, and nothing else. ``failed -> active`` is the way out of a failure (a retry
# after the cause is fixed); ``archived`` is the only status with no way out: archived contracts are
# kept for the record and deleted by cleanup. ``active -> archived`` and ``created -> completed`` are the
# original API's moves (archive an active contract; complete one, which an old client sees as active):
# old clients keep making them.
TRANSITIONS: dict[ContractStatus, frozenset[ContractStatus]] = {
    S.CREATED: frozenset({S.ACTIVE, S.PAUSED, S.FAILED, S.COMPLETED, S.ARCHIVED}),
    S.ACTIVE: frozenset({S.WAITING_FOR_INPUT, S.PAUSED, S.BLOCKED, S.COMPLETING, S.COMPLETED, S.FAILED, S.ARCHIVED}),
    S.WAITING_FOR_INPUT: frozenset({S.ACTIVE, S.PAUSED, S.BLOCKED, S.FAILED}),
    S.PAUSED: frozenset({S.ACTIVE, S.FAILED, S.ARCHIVED}),
    S.BLOCKED: frozenset({S.ACTIVE, S.PAUSED, S.FAILED}),
    S.COMPLETING: frozenset({S.COMPLETED, S.FAILED, S.ACTIVE}),
    S.COMPLETED: frozenset({S.ARCHIVED}),
    S.FAILED: frozenset({S.ACTIVE, S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}

# Statuses in which no work happens: stale detection, phase changes and new tasks skip them.
TERMINAL: frozenset[ContractStatus] = frozenset({S.COMPLETED, S.FAILED, S.ARCHIVED})

# How a new status looks to a client that only knows the original three.
LEGACY_STATUS: dict[ContractStatus, ContractStatus] = {
    S.CREATED: S.ACTIVE,
    S.ACTIVE: S.ACTIVE,
    S.WAITING_FOR_INPUT: S.ACTIVE,
    S.PAUSED: S.ACTIVE,
    S.BLOCKED: S.ACTIVE,
    S.COMPLETING: S.ACTIVE,
    S.COMPLETED: S.COMPLETED,
    S.FAILED: S.COMPLETED,
    S.ARCHIVED: S.ARCHIVED,
}


LEGACY_STATUSES: frozenset[ContractStatus] = frozenset({S.ACTIVE, S.COMPLETED, S.ARCHIVED})


def legacy_group(status: ContractStatus) -> list[ContractStatus]:
    """Every status that looks like ``status`` to an old client (a legacy filter ``active`` matches a
    paused contract, because that client sees it as active)."""
    return [s for s, legacy in LEGACY_STATUS.items() if legacy is status]


def allowed_next(current: ContractStatus) -> list[str]:
    return sorted(s.value for s in TRANSITIONS[current])


def check_transition(current: ContractStatus, new: ContractStatus) -> None:
    """Raise ``InvalidTransition`` (naming the allowed targets) unless ``current -> new`` is allowed."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(
            f"cannot change status from {current.value} to {new.value}",
            {"from": current.value, "to": new.value, "allowed": allowed_next(current)},
        )


def is_terminal(status: ContractStatus) -> bool:
    return status in TERMINAL
