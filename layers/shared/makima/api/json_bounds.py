"""Bounds on free-form JSON in request bodies: the fields whose shape the service does not know (a
supervisor's conversation messages and pending questions).

Unbounded, such a value breaks later answers rather than the request that brought it: pydantic stops
serialising past about 255 levels, so one message nested 400 deep was stored and turned every later
``GET …/supervisor/state`` and restore into a 500. So each value is checked where it comes in, and a
request carrying a bad one is refused with ``422 INVALID_REQUEST`` before anything is written:

- at most ``MAX_DEPTH`` (64) nested arrays/objects (the value itself is the first), which leaves room
  for the envelopes it is later answered in;
- at most ``max_bytes`` as compact JSON text, so one message or question cannot fill the stored state;
- no NUL character in a key or a string (PostgreSQL's ``jsonb`` cannot hold one) and only finite numbers.

The depth is measured without recursion, so no input can exhaust the stack while it is being checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

MAX_DEPTH = 64
# One conversation message, and a supervisor's pending questions all together. Both are far below the
# request body limit (``max_body_bytes``) and, with the conversation page, keep every answer that
# carries them far below Lambda's 6 MB response limit (docs/performance.md, "Supervisor state").
MAX_MESSAGE_BYTES = 64 * 1024
MAX_QUESTIONS_BYTES = 128 * 1024


def depth_of(value: Any) -> int:
    """How many arrays/objects are nested in ``value`` (a scalar is 0), stopping past ``MAX_DEPTH``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def check(value: Any, *, max_bytes: int, max_depth: int | None = MAX_DEPTH) -> Any:
    """``value`` when it is within the bounds; raises pydantic's error (a 422 at the edge) otherwise."""
    if max_depth is not None and depth_of(value) > max_depth:
        raise PydanticCustomError(
            "json_too_deep",
            "nested more than {max_depth} levels deep",
            {"max_depth": max_depth},
        )
    if _has_nul(value):
        raise PydanticCustomError("json_nul", "contains a NUL character, which cannot be stored")
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
    except ValueError:
        raise PydanticCustomError("json_not_finite", "contains NaN or an infinite number") from None
    if size > max_bytes:
        raise PydanticCustomError(
            "json_too_large",
            "{size} bytes as JSON, more than {max_bytes}",
            {"size": size, "max_bytes": max_bytes},
        )
    return value


def bounded(max_bytes: int, *, max_depth: int | None = MAX_DEPTH) -> AfterValidator:
    """``Annotated[dict[str, Any], bounded(...)]``: a free-form field checked by ``check``."""
    checker: Callable[[Any], Any] = lambda value: check(value, max_bytes=max_bytes, max_depth=max_depth)  # noqa: E731
    return AfterValidator(checker)
