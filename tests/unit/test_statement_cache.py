"""Every statement text of the data-access layer fits psycopg's cache of converted queries.

psycopg turns a query's ``%(name)s`` placeholders into PostgreSQL's ``$n`` once per text and keeps the
result only for texts of at most ``MAX_CACHED_STATEMENT_LENGTH`` characters (and 50 parameters); a longer
text is parsed again, by a regular expression, on every execution. The heartbeat ingest statement was
4,794 characters with its comments: a tenth of a heartbeat's server CPU (issue 15,
``db/heartbeats.py: _compact``)."""

from __future__ import annotations

import importlib
import pkgutil

from psycopg import _queries

import makima.db
from makima.db import heartbeats


def _statements() -> list[tuple[str, str]]:
    found = []
    for info in pkgutil.iter_modules(makima.db.__path__):
        module = importlib.import_module(f"makima.db.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, str) and not name.startswith("__") and "%(" in value:
                found.append((f"{info.name}.{name}", value))
    return found


def test_every_statement_text_is_short_enough_to_be_converted_once() -> None:
    statements = _statements()
    assert any(name == "heartbeats._INGEST" for name, _ in statements)
    long = {name: len(text) for name, text in statements if len(text) > _queries.MAX_CACHED_STATEMENT_LENGTH}
    assert long == {}


def test_the_compacted_ingest_statement_keeps_its_sql() -> None:
    text = heartbeats._INGEST
    assert "\n  " not in text
    assert not any(line.startswith("--") for line in text.splitlines())
    assert "WITH input AS (" in text
    assert "AS notified  -- referenced" in text
