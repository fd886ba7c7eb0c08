"""Issue 13, pure parts: the bounds on free-form JSON (``api/json_bounds.py``), which oldest messages a
capped conversation drops (``domain/supervisors.py: compaction``), and restoration's view of a
compacted conversation (messages before ``conversation_start`` are gone on purpose, not missing)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic_core import PydanticCustomError

from makima.api.json_bounds import MAX_DEPTH, check, depth_of
from makima.domain.supervisors import (
    Compaction,
    RestoreMode,
    StoredState,
    check_consistency,
    compaction,
    plan_restoration,
    restoration_context,
)

pytestmark = pytest.mark.unit


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


def test_depth_counts_arrays_and_objects_without_recursion() -> None:
    assert depth_of("x") == 0
    assert depth_of({"a": [1, {"b": 2}]}) == 3
    assert depth_of(nested(MAX_DEPTH)) == MAX_DEPTH
    # Far deeper than Python's recursion limit: measured all the same (it stops past the bound).
    assert depth_of(nested(100_000)) == MAX_DEPTH + 1


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (nested(MAX_DEPTH + 1), "json_too_deep"),
        ({"content": "x" * 2000}, "json_too_large"),
        ({"content": "é" * 600}, "json_too_large"),  # bytes, not characters
        ({"a\x00": 1}, "json_nul"),
        ({"a": ["b\x00"]}, "json_nul"),
        ({"a": float("nan")}, "json_not_finite"),
        ({"a": float("inf")}, "json_not_finite"),
    ],
)
def test_values_outside_the_bounds_are_refused(value: Any, kind: str) -> None:
    with pytest.raises(PydanticCustomError) as refused:
        check(value, max_bytes=1024)
    assert refused.value.type == kind


def test_values_within_the_bounds_pass_unchanged() -> None:
    value = {"role": "user", "content": nested(MAX_DEPTH - 1), "n": 1.5, "ok": None}
    assert check(value, max_bytes=1024) is value
    # Without a depth bound (a list whose items were checked one by one), only the size counts.
    assert check([nested(MAX_DEPTH)], max_bytes=1024, max_depth=None) is not None


def test_compaction_drops_the_oldest_down_to_three_quarters_of_the_cap() -> None:
    sizes = [(seq, 100) for seq in range(10, 30)]  # 20 messages, 2000 bytes
    assert compaction(sizes, 2000) is None
    # Over 1600: keep the newest 1200 bytes (3/4 of the cap), i.e. the last 12 messages.
    assert compaction(sizes, 1600) == Compaction(start=18, kept_bytes=1200)
    # The newest message is always kept, even alone over the cap.
    assert compaction([(0, 50), (1, 500)], 400) == Compaction(start=1, kept_bytes=500)
    assert compaction([], 10) is None


def _stored(**fields: Any) -> StoredState:
    base = StoredState(
        state="working",
        phase="plan",
        conversation_length=10,
        conversation_seqs=tuple(range(6, 10)),
        pending_questions=[],
        spawned_task_ids=(),
        waiting_on_task_ids=(),
        last_checkpoint=None,
        last_save_point="llm_response",
        save_seq=3,
        dead=True,
        conversation_start=6,
    )
    return replace(base, **fields)


def test_a_compacted_conversation_is_consistent_and_a_gap_after_its_start_is_not() -> None:
    assert check_consistency(_stored(), contract_phases=["plan"], known_task_ids=set()).ok
    assert not check_consistency(
        _stored(conversation_seqs=(6, 8, 9)), contract_phases=["plan"], known_task_ids=set()
    ).ok
    # The checkpoint fallback counts from the same start; one from before the start keeps nothing.
    checkpoint = {"seq": 2, "state": "working", "phase": "plan", "conversation_length": 4}
    plan = plan_restoration(
        _stored(conversation_seqs=(6, 8, 9), last_checkpoint=checkpoint),
        contract_phase="plan",
        contract_phases=["plan"],
        known_task_ids=set(),
    )
    assert (plan.mode, plan.conversation_length, plan.truncate_conversation) == (RestoreMode.CHECKPOINT, 4, True)


def test_the_restoration_context_says_how_many_messages_were_compacted() -> None:
    text = restoration_context(
        mode="crash",
        phase="plan",
        state="working",
        conversation_length=4,
        compacted=6,
        redelivered_questions=[],
        answers=[],
        waiting_on=[],
        finished_while_away=[],
        warnings=[],
    )
    assert "(4 messages) has been restored" in text
    assert "earliest 6 messages" in text
