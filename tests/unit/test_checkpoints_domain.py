"""The pure rules of LangGraph checkpoints (domain/checkpoints.py): how many rows a page takes."""

from __future__ import annotations

from makima.domain.checkpoints import page_budget


def test_a_page_takes_what_fits_in_its_budget() -> None:
    assert page_budget([10, 10, 10], limit=100, budget=25) == 2
    assert page_budget([10, 10, 10], limit=100, budget=30) == 3


def test_a_page_takes_at_most_limit_rows() -> None:
    assert page_budget([1] * 10, limit=3, budget=1000) == 3


def test_a_page_always_moves_on_by_one() -> None:
    # A checkpoint is within the cap, which is the budget; even one past it must not stall the list.
    assert page_budget([50, 1], limit=100, budget=10) == 1


def test_an_empty_list_is_an_empty_page() -> None:
    assert page_budget([], limit=5, budget=10) == 0
