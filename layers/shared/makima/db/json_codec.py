"""How psycopg parses ``json``/``jsonb`` values read from PostgreSQL: orjson, falling back to the standard
library for what orjson refuses.

A supervisor's state read parses its conversation, 200 messages of a few hundred bytes each: the
standard ``json.loads`` was 10 % of the request's CPU on the local stack, orjson parses the same 7 times
faster (issue 15, docs/performance.md). The answers are the same: jsonb holds only valid JSON, both parse
it to the same Python values, except that orjson reads an integer past 64 bits as a float (losing
digits) where ``json.loads`` keeps it exact: a document with a run of 19 digits or more (where such an
integer could be; a long digit string in a text too) is parsed by ``json.loads``, as is what orjson
refuses (tests/integration/test_json_codec.py compares them over generated documents). Only reading: writing
stays psycopg's ``json.dumps`` (orjson writes NaN as null and refuses integers past 64 bits, where
``json.dumps`` keeps them).

``install`` is called once by ``makima.db.connection`` on import, before any connection exists: the
loader is psycopg's global default for every connection of the process.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from psycopg.types.json import set_json_loads

# Where an integer past 64 bits could be: 2**63 has 19 digits.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
_DIGITS = b"0123456789"


def _may_hold_a_long_integer(raw: bytes) -> bool:
    """Whether ``raw`` has a run of 19 digits. Counting its digits first (one pass in C, a tenth of a
    microsecond for a message) spares most documents the search (two microseconds: as long as parsing)."""
    return len(raw) - len(raw.translate(None, _DIGITS)) >= 19 and _LONG_NUMBER.search(raw) is not None


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if not _may_hold_a_long_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def install() -> None:
    set_json_loads(loads)
