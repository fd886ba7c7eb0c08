"""Input types that take only what the OpenAPI document says.

Pydantic's lax mode turns ``0`` into ``false``, ``true`` into ``1`` and ``0`` into 1970-01-01: a client
that sends the wrong type gets a guess instead of an error, and the document (``boolean``, ``integer``,
``date-time`` string) is not what the API accepts. Request fields use these instead. Not pydantic's
``StrictInt``: JSON's ``1.0`` is an integer, and stays accepted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("Input should be a valid integer, not a boolean")
    return value


def _text(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("Input should be a date-time string (e.g. 2026-11-24T10:30:00Z)")
    return value


# Bounds go before it (``Annotated[int, Field(ge=1), NO_BOOL] | None``): after it, pydantic cannot put
# them into the document of an optional field.
NO_BOOL = BeforeValidator(_no_bool)
Bool = Annotated[bool, Strict()]
Int = Annotated[int, NO_BOOL]
Float = Annotated[float, NO_BOOL]
Timestamp = Annotated[datetime, BeforeValidator(_text)]
