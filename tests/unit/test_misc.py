"""Durations, cursors, tokens, task statuses and the error envelope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from makima.domain.durations import parse_duration
from makima.domain.models import Contract
from makima.domain.statuses import ContractStatus
from makima.domain.tasks import TaskStatus, check_task_transition
from makima.errors import BadRequest, InvalidTransition, MakimaError, VersionConflict
from makima.services.auth import bearer, hash_token, new_token
from makima.services.contracts import decode_cursor, encode_cursor

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("45", timedelta(minutes=45)),
        ("90s", timedelta(seconds=90)),
        ("1w", timedelta(weeks=1)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "m", "-5m", "3x", "1.5h", "10 minutes", "999999999w"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def _contract(created: datetime) -> Contract:
    now = datetime.now(UTC)
    return Contract(
        id=uuid4(),
        owner_id=uuid4(),
        name="c",
        description="",
        contract_type="simple",
        phase="plan",
        status=ContractStatus.CREATED,
        version=1,
        phase_guard=False,
        status_changed_at=now,
        last_activity_at=now,
        waiting_for=None,
        blocked_reason=None,
        failure_reason=None,
        created_at=created,
        updated_at=now,
    )


@given(st.datetimes(timezones=st.just(UTC)))
def test_cursor_round_trip(created: datetime) -> None:
    c = _contract(created)
    assert decode_cursor(encode_cursor(c)) == (created, c.id)


@pytest.mark.parametrize("cursor", ["", "not-base64!", "bm90IGpzb24", "WzFd"])
def test_bad_cursor_is_a_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(cursor)


def test_tokens_are_random_and_hashed() -> None:
    a, b = new_token(), new_token()
    assert a != b
    assert a.startswith("mkm_")
    assert len(a) > 40
    assert hash_token(a) == hash_token(a) != hash_token(b)
    assert len(hash_token(a)) == 32


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
        ("", None),
    ],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def test_task_transitions() -> None:
    check_task_transition(TaskStatus.PENDING, TaskStatus.RUNNING)
    check_task_transition(TaskStatus.RUNNING, TaskStatus.COMPLETED)
    for finished in (TaskStatus.COMPLETED, TaskStatus.FAILED):
        with pytest.raises(InvalidTransition):
            check_task_transition(finished, TaskStatus.RUNNING)


def test_errors_carry_code_status_and_details() -> None:
    err = VersionConflict("stale", {"expected": 1, "actual": 2, "current_phase": "plan"})
    assert (err.code, err.status) == ("VERSION_CONFLICT", 409)
    assert err.to_dict() == {"code": "VERSION_CONFLICT", "message": "stale", "details": err.details}
    assert isinstance(err, MakimaError)
