"""Durations as people type them: ``30m``, ``2h``, ``7d``, ``90s``, or a bare number of minutes."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$")
# What the API documents (its query parameters): up to five digits and a unit, so that even weeks stay a date
# PostgreSQL and Python can both subtract from now; the parser itself reads more, for the CLI.
DURATION = r"^[0-9]{1,5}[smhdwSMHDW]?$"


def parse_duration(text: str) -> timedelta:
    """Parse ``text``; ValueError (with the accepted forms) when it is not a duration."""
    match = _PATTERN.match(text.lower())
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h, d or w (e.g. 30m, 2h, 7d)")
    amount, unit = int(match.group(1)), match.group(2) or "m"
    try:
        return timedelta(**{_UNITS[unit]: amount})
    except OverflowError:  # e.g. 999999999w: more days than a timedelta holds
        raise ValueError(f"invalid duration {text!r}: too long") from None
