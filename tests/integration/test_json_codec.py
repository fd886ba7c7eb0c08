"""psycopg reads json/jsonb with orjson (db/json_codec.py, issue 15): every document PostgreSQL stores
reads back as the standard library's ``json.loads`` reads it, value for value and type for type,
including what orjson refuses (integers past 64 bits, numbers past a double) and falls back for."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from makima.db import json_codec
from makima.db.connection import PooledDatabase

pytestmark = pytest.mark.integration

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text().filter(lambda s: "\x00" not in s)  # jsonb refuses \u0000
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8).filter(lambda s: "\x00" not in s), children, max_size=5)
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 and 1.0 differ here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _read_back(db: PooledDatabase, text: str) -> tuple[Any, Any]:
    """The jsonb of ``text`` as psycopg reads it now, and as ``json.loads`` reads PostgreSQL's text of it."""
    with db.connection() as conn:
        row = conn.execute("SELECT %s::jsonb AS value, %s::jsonb::text AS text", (text, text)).fetchone()
    assert row is not None
    return row["value"], json.loads(row["text"])


def test_the_loader_is_installed_for_every_connection(db: PooledDatabase) -> None:
    with db.connection() as conn:
        assert conn.adapters.get_loader(psycopg.adapters.types["jsonb"].oid, psycopg.pq.Format.TEXT) is not None
    assert _read_back(db, '{"a": [1, 2.5, "x"]}')[0] == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",  # past 64 bits: orjson refuses, json.loads reads an int
        "-18446744073709551617",
        "1e400",  # past a double: json.loads reads inf
        "0.1",
        "1.0",
        '"\\ud83d\\ude00 caf\\u00e9"',
        '{"nested": {"deep": [[[]]], "n": 1e-320}}',
    ],
)
def test_edge_values_read_as_the_standard_library_reads_them(db: PooledDatabase, text: str) -> None:
    ours, standard = _read_back(db, text)
    assert _same(ours, standard)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_DOCUMENTS)
def test_any_document_reads_as_the_standard_library_reads_it(db: PooledDatabase, document: Any) -> None:
    ours, standard = _read_back(db, json.dumps(document))
    assert _same(ours, standard)
    assert _same(json_codec.loads(json.dumps(document)), json.loads(json.dumps(document)))
