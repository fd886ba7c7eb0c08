"""Keyset paging, shared by every list of the API: a page of at most ``limit`` items and an opaque
cursor naming the last one, from which the next page continues.

A cursor is the sort key of the page's last item (a JSON list, base64url without padding), so the next
page is an indexed range scan from there, not an OFFSET: inserts and deletes between two pages neither
repeat nor skip an item that was there all along. Clients must treat it as opaque; a cursor that does
not decode to the list's key is a 400 ``BAD_REQUEST``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from makima.domain.bounds import MAX_ID
from makima.errors import Inconsistent, InvalidCursor

T = TypeVar("T")
KeyPart = datetime | UUID | str | int
# The largest cursor a client may pass back (a query parameter's max_length), small enough for any
# request line (uvicorn's h11 takes 16 KiB of request line and headers, API Gateway 10 KB). The longest
# key is a worktree path: one of up to 4096 bytes (Linux's PATH_MAX) is a cursor of about 5,500.
MAX_CURSOR_CHARS = 8_000
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"  # base64url without padding (an empty one is no cursor: omit it)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None on the last page


def _plain(part: KeyPart) -> str | int:
    if isinstance(part, datetime):
        return part.isoformat()
    if isinstance(part, UUID):
        return str(part)
    return part


def encode_cursor(key: Sequence[KeyPart]) -> str:
    raw = json.dumps([_plain(p) for p in key], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _typed(value: Any, kind: type) -> Any:
    if kind is datetime:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("a cursor's time carries its zone")
        return parsed.astimezone(UTC)  # OverflowError at the ends of the range: a tampered cursor
    if kind is UUID:
        return UUID(value)
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError("not an integer")
    if kind is str and not isinstance(value, str):
        raise TypeError("not a string")
    return value


def decode_cursor(cursor: str, kinds: Sequence[type]) -> tuple[Any, ...]:
    """The key ``cursor`` names, each part of the type in ``kinds``; ``BadRequest`` for anything else
    (a cursor of another list, a tampered one)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise ValueError("not this list's cursor")
        return tuple(_typed(v, k) for v, k in zip(parts, kinds, strict=True))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, OverflowError) as exc:
        raise invalid_cursor(cursor) from exc


def invalid_cursor(cursor: str) -> InvalidCursor:
    return InvalidCursor("invalid cursor: pass back the next_cursor of a previous page", {"cursor": cursor[:100]})


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], Sequence[KeyPart]]) -> Page[T]:
    """The page from ``rows`` fetched with ``LIMIT limit + 1``: the extra row only tells that there is
    a next page, whose cursor is the key of this page's last item."""
    items = list(rows[:limit])
    more = len(rows) > limit and bool(items)
    return Page(items, encode_cursor(key(items[-1])) if more else None)


def mapped(page: Page[Any], convert: Callable[[Any], T]) -> Page[T]:
    """The same page with each item converted (rows to records, once the cursor is taken from the row)."""
    return Page([convert(item) for item in page.items], page.next_cursor)


def after_id(cursor: str | None, after: int) -> int:
    """The id a list keyed by id continues after: ``cursor``'s, or the ``after_id`` parameter of the
    lists that had one before cursors (the event log, the chat); both at once is a 400."""
    if cursor is None:
        return after
    if after:
        raise Inconsistent("pass either cursor or after_id, not both", {"after_id": after})
    (ident,) = decode_cursor(cursor, (int,))
    if not 0 <= ident <= MAX_ID:  # a tampered one must not reach the bigint comparison
        raise invalid_cursor(cursor)
    return int(ident)
