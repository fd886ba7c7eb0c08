"""The keyset cursor (``domain/paging.py``): what it encodes comes back, and anything a client makes up
is a 400 ``BAD_REQUEST``, never another exception (which would be a 500)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from makima.domain import paging
from makima.errors import BadRequest

KINDS = (datetime, UUID, str, int)


@given(
    st.datetimes(timezones=st.just(UTC)),
    st.uuids(),
    st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s),
    st.integers(0, 2**62),
)
def test_a_cursor_names_the_key_it_was_made_from(when: datetime, ident: UUID, path: str, n: int) -> None:
    cursor = paging.encode_cursor((when, ident, path, n))
    assert paging.decode_cursor(cursor, KINDS) == (when, ident, path, n)
    assert len(cursor) <= paging.MAX_CURSOR_CHARS


@given(st.one_of(st.text(max_size=300), st.recursive(st.none() | st.integers() | st.text(), st.lists, max_leaves=8)))
def test_anything_else_is_a_bad_request(junk: object) -> None:
    cursors = [junk] if isinstance(junk, str) else [base64.urlsafe_b64encode(json.dumps(junk).encode()).decode()]
    for cursor in cursors:
        try:
            paging.decode_cursor(cursor, KINDS)
        except BadRequest:
            continue


def test_the_extra_row_makes_the_next_cursor() -> None:
    rows = [{"id": i} for i in range(4)]
    page = paging.page_of(rows, 3, lambda r: (r["id"],))
    assert page.items == rows[:3]
    assert page.next_cursor is not None
    assert paging.decode_cursor(page.next_cursor, (int,)) == (2,)
    assert paging.page_of(rows, 4, lambda r: (r["id"],)).next_cursor is None


def test_after_id_takes_one_of_cursor_and_after_id() -> None:
    assert paging.after_id(None, 7) == 7
    assert paging.after_id(paging.encode_cursor((9,)), 0) == 9
    with pytest.raises(BadRequest):
        paging.after_id(paging.encode_cursor((9,)), 7)
    for key in ((-1,), (2**63,), (True,)):
        with pytest.raises(BadRequest):
            paging.after_id(paging.encode_cursor(key), 0)
