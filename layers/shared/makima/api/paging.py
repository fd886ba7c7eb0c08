"""The query parameters and the response field every paged list shares (``domain/paging.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import Field

from makima.domain.paging import CURSOR_PATTERN, MAX_CURSOR_CHARS

Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_CHARS,
        pattern=CURSOR_PATTERN,
        description="The next_cursor of the previous page; omit for the first page. Opaque.",
    ),
]


def limit_query(maximum: int) -> Any:
    """The ``limit`` parameter of a list: at least 1, at most ``maximum`` items per page."""
    return Query(ge=1, le=maximum, description=f"Items per page (at most {maximum}).")


def next_cursor() -> Any:
    return Field(description="Pass as cursor to get the next page; null on the last page.")
