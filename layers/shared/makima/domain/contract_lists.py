"""What the contract list can be searched by and sorted on (``GET /contracts``, issue 16): the sorts and
the keyset cursor of each, and the name search's pattern.

A cursor carries the sort it belongs to, so one handed out by a list in one order is refused by a list
in another (400 ``INVALID_CURSOR``) rather than silently starting from the wrong place. The ``created``
cursor is the one handed out before the other sorts existed (``[created_at, id]``), so a client holding
one keeps paging; the ``activity`` cursor is ``["activity", last_activity_at, id]``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from makima.domain import paging

# The longest name search: names are at most 200 characters; a longer search matches nothing useful
# and would only cost a longer pattern match on every row of the scope.
MAX_SEARCH_CHARS = 100


class ContractSort(StrEnum):
    CREATED = "created"  # newest first: (created_at, id) DESC, the default and the order before issue 16
    ACTIVITY = "activity"  # most recently active first: (last_activity_at, id) DESC


def encode_cursor(sort: ContractSort, at: datetime, ident: UUID) -> str:
    """The cursor after a contract whose sort key is (``at``, ``ident``)."""
    if sort is ContractSort.CREATED:
        return paging.encode_cursor((at, ident))
    return paging.encode_cursor((sort.value, at, ident))


def decode_cursor(sort: ContractSort, cursor: str) -> tuple[datetime, UUID]:
    """The key ``cursor`` continues after in ``sort``'s order; ``InvalidCursor`` for a cursor of another
    sort (or of another list, or a tampered one)."""
    if sort is ContractSort.CREATED:
        at, ident = paging.decode_cursor(cursor, (datetime, UUID))
        return at, ident
    tag, at, ident = paging.decode_cursor(cursor, (str, datetime, UUID))
    if tag != sort.value:
        raise paging.invalid_cursor(cursor)
    return at, ident


def like_pattern(search: str) -> str:
    """An ILIKE pattern matching names that contain ``search`` as typed: ``%``, ``_`` and the escape
    character ``\\`` match themselves, not any string or character."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
