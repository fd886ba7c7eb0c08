"""The pure part of the per-token rate limits: which limit, how big a slice, how long to wait."""

from __future__ import annotations

import uuid

import pytest

from makima.domain.principals import Principal, Role
from makima.domain.rate_limits import Limit, Limits, retry_after_header


@pytest.mark.parametrize(
    ("per_second", "burst", "expected"),
    [
        (0.01, 3, 1),  # a low limit leases one request at a time: exact
        (1.9, 100, 1),
        (50, 1000, 25),  # the user default: half a second of the rate
        (200, 5000, 100),  # the daemon default
        (100, 40, 4),  # at most a tenth of the burst
        (1000, 5, 1),  # never below one
    ],
)
def test_slice_size(per_second: float, burst: int, expected: int) -> None:
    assert Limit(per_second, burst).slice_size(0.5) == expected


def test_retry_after_is_the_time_until_one_request_is_free() -> None:
    limit = Limit(per_second=0.5, burst=3)  # one request costs 2 s of refill
    # A bucket 6 s from full (all 3 spent) frees one request in 2 s; 5 s from full, in 1 s
    assert limit.retry_after(6.0) == pytest.approx(2.0)
    assert limit.retry_after(5.0) == pytest.approx(1.0)
    assert limit.retry_after(1.0) == 0.0


def test_retry_after_header_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.01, 1.0, 1.2, 59.9)] == [1, 1, 1, 2, 60]


def test_the_limit_of_each_kind_and_off() -> None:
    limits = Limits(user=Limit(50, 1000), daemon=Limit(0, 10))
    user = Principal(user_id=uuid.uuid4(), role=Role.ADMIN)
    daemon = Principal(user_id=uuid.uuid4(), role=Role.DAEMON)
    assert limits.of(user) == Limit(50, 1000)
    assert limits.of(daemon).off
    assert not limits.of(user).off
