"""The dashboard's records: what a contract waits for, as the dashboard names it."""

from __future__ import annotations

import uuid

from makima.domain.dashboard import waiting_kind


def test_waiting_kind_is_the_part_before_the_colon() -> None:
    assert waiting_kind(f"question:{uuid.uuid4()}") == "question"
    assert waiting_kind("phase_confirmation") == "phase_confirmation"
    assert waiting_kind("completion_confirmation") == "completion_confirmation"
    assert waiting_kind("a reason: with a colon") == "a reason"
    assert waiting_kind(None) is None
