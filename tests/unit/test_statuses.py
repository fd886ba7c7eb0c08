"""Task 1.4: the contract status table."""

from __future__ import annotations

import itertools

import pytest

from makima.domain.statuses import (
    LEGACY_STATUS,
    TERMINAL,
    TRANSITIONS,
    ContractStatus,
    allowed_next,
    check_transition,
)
from makima.errors import InvalidTransition

pytestmark = pytest.mark.unit
S = ContractStatus


def test_nine_statuses_with_the_three_legacy_ones_unchanged() -> None:
    assert len(ContractStatus) == 9
    assert {"active", "completed", "archived"} <= {s.value for s in ContractStatus}
    assert set(TRANSITIONS) == set(ContractStatus)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.CREATED, S.ACTIVE),
        (S.ACTIVE, S.WAITING_FOR_INPUT),
        (S.WAITING_FOR_INPUT, S.ACTIVE),
        (S.ACTIVE, S.PAUSED),
        (S.PAUSED, S.ACTIVE),
        (S.ACTIVE, S.BLOCKED),
        (S.BLOCKED, S.ACTIVE),
        (S.ACTIVE, S.COMPLETING),
        (S.COMPLETING, S.COMPLETED),
        (S.COMPLETED, S.ARCHIVED),
        (S.ACTIVE, S.FAILED),
        (S.FAILED, S.ACTIVE),
        # the original API's moves, kept for old clients
        (S.ACTIVE, S.ARCHIVED),
        (S.CREATED, S.COMPLETED),
    ],
)
def test_valid_transitions_are_allowed(old: ContractStatus, new: ContractStatus) -> None:
    check_transition(old, new)  # raises if refused


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.COMPLETED, S.ACTIVE),
        (S.ARCHIVED, S.ACTIVE),
        (S.PAUSED, S.COMPLETED),
        (S.WAITING_FOR_INPUT, S.COMPLETED),
        (S.ACTIVE, S.ACTIVE),
        (S.ACTIVE, S.CREATED),
    ],
)
def test_invalid_transitions_are_rejected_with_the_allowed_targets(old: ContractStatus, new: ContractStatus) -> None:
    with pytest.raises(InvalidTransition) as err:
        check_transition(old, new)
    assert err.value.code == "INVALID_TRANSITION"
    assert err.value.status == 400
    assert err.value.details["allowed"] == allowed_next(old)


def test_the_table_is_exactly_what_check_transition_enforces() -> None:
    for old, new in itertools.product(ContractStatus, repeat=2):
        if new in TRANSITIONS[old]:
            check_transition(old, new)
        else:
            with pytest.raises(InvalidTransition):
                check_transition(old, new)


def test_every_non_archived_status_has_a_way_out() -> None:
    # No stuck states: everything but archived can move somewhere.
    for status in ContractStatus:
        assert bool(TRANSITIONS[status]) == (status is not S.ARCHIVED)


def test_legacy_mapping_folds_onto_the_original_three() -> None:
    assert set(LEGACY_STATUS.values()) == {S.ACTIVE, S.COMPLETED, S.ARCHIVED}
    for legacy in (S.ACTIVE, S.COMPLETED, S.ARCHIVED):
        assert LEGACY_STATUS[legacy] is legacy
    assert {S.COMPLETED, S.FAILED, S.ARCHIVED} == TERMINAL
