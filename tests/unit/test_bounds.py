"""Every integer a client can send is bounded within the PostgreSQL type it lands in (issue 13,
defect 4): walked from the OpenAPI document, so a new field without ``ge``/``le`` fails here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from makima.api.app import create_app
from makima.domain.bounds import INT4_MAX, MAX_ID, MAX_SEQ, MAX_SEQ_STEP

BIGINT_MAX = 2**63 - 1
INT4_MIN = -(2**31)

# The integers that land in (or are compared with) a bigint column; every other one is an integer
# column's, or a size that must stay as small.
BIGINT_FIELDS = {
    "StateSaveIn.seq": "counter",  # supervisor_states.save_seq: +1 (restore's next_seq) must still fit
    "?after_id": "id",  # contract_events.id, chat_messages.id
}


class _NoDatabase:
    def connection(self) -> Any:
        raise AssertionError("building the OpenAPI document must not connect")

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class IntegerField:
    where: str
    minimum: int | None
    maximum: int | None


def _walk(doc: dict[str, Any], schema: dict[str, Any], where: str, seen: set[str], out: list[IntegerField]) -> None:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            _walk(doc, doc["components"]["schemas"][name], name, seen, out)
        return
    if schema.get("type") == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        out.append(IntegerField(where, None if low is None else int(low), None if high is None else int(high)))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            _walk(doc, sub, where, seen, out)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _walk(doc, schema[key], f"{where}[]", seen, out)
    for name, sub in schema.get("properties", {}).items():
        _walk(doc, sub, f"{where}.{name}", seen, out)


@cache
def request_integers() -> tuple[IntegerField, ...]:
    """The integers of every request body and query/path parameter (responses are ours to bound)."""
    doc = create_app(_NoDatabase()).openapi()  # nothing connects: only the document is built
    out: list[IntegerField] = []
    seen: set[str] = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                _walk(doc, param["schema"], f"{method.upper()} {path} ?{param['name']}", seen, out)
            for media in op.get("requestBody", {}).get("content", {}).values():
                _walk(doc, media["schema"], f"{method.upper()} {path} body", seen, out)
    return tuple(out)


def _kind(field: IntegerField) -> str:
    for suffix, kind in BIGINT_FIELDS.items():
        if field.where.endswith(suffix):
            return kind
    return "integer"


def test_the_walk_finds_the_integers_of_the_defect() -> None:
    names = {f.where for f in request_integers()}
    assert {"Heartbeat.generation", "StateSaveIn.seq", "StateSaveIn.generation", "DaemonRegister.capacity"} <= names
    assert any(n.endswith("?limit") for n in names)
    assert any(n.endswith("?after_id") for n in names)


def test_every_request_integer_has_both_bounds_within_its_column() -> None:
    unbounded = [f.where for f in request_integers() if f.minimum is None or f.maximum is None]
    assert not unbounded, f"request integers without ge/le: {unbounded}"
    for f in request_integers():
        assert f.minimum is not None
        assert f.maximum is not None
        top = {"integer": INT4_MAX, "counter": MAX_SEQ, "id": MAX_ID}[_kind(f)]
        assert INT4_MIN <= f.minimum <= f.maximum <= top, f


@given(st.data())
def test_any_admitted_value_fits_its_column_with_room_to_count(data: st.DataObject) -> None:
    for f in request_integers():
        assert f.minimum is not None
        assert f.maximum is not None
        value = data.draw(st.integers(f.minimum, f.maximum), label=f.where)
        if _kind(f) == "integer":
            assert INT4_MIN <= value <= INT4_MAX
        else:
            # a bigint the service adds to (restore's next_seq, a save's step) never overflows
            assert value + MAX_SEQ_STEP + 1 <= BIGINT_MAX
