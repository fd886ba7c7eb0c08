"""How the CLI prints: one Rich console convention, relative times, short ids and the contracts table.

Shared by the ``makima contracts`` commands (``contracts.py``, ``cleanup.py``, ``monitor.py``). The API is
small on purpose:

- ``console(stderr=False)``: a Rich ``Console`` that colours only when writing to a terminal and never
  when ``NO_COLOR`` is set (Rich's own detection), with markup and emoji codes off (names print as
  typed; style with ``Text``); create it inside the command, not at import, so it writes to the
  ``sys.stdout`` of the moment (tests swap it).
- ``parse_time(text)``: an API timestamp (ISO-8601, ``Z`` allowed) as an aware ``datetime``, or None.
- ``ago(when, now=None)``: ``"5s ago"``, ``"12m ago"``, ``"3h ago"``, ``"2d ago"``, ``"-"`` for None.
- ``human_duration(seconds)``: ``"45s"``, ``"12m"``, ``"2h 5m"``, ``"3d 4h"``.
- ``short_id(id)``: the first 8 characters of an id.
- ``STATUS_STYLES`` / ``status_text(status)``: the colour of each contract status.
- ``contracts_table(contracts, now=None)``: the ``contracts list`` table (ID, NAME, STATUS, PHASE,
  ACTIVITY, VER), readable on 80 columns: the name is cut with an ellipsis to what is left.
- ``one_line(text)``: text with its line breaks and tabs turned into spaces.
- ``compact_line(contract)``: ``"<id8> <status> <phase> <name>"``, one line per contract.
- ``print_json(data)``: indented, key-sorted JSON on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "STATUS_STYLES",
    "ago",
    "compact_line",
    "console",
    "contracts_table",
    "human_duration",
    "one_line",
    "parse_time",
    "print_json",
    "short_id",
    "status_text",
]

STATUS_STYLES: dict[str, str] = {
    "created": "cyan",
    "active": "green",
    "waiting_for_input": "yellow",
    "paused": "blue",
    "blocked": "red",
    "completing": "green",
    "completed": "dim green",
    "failed": "bold red",
    "archived": "dim",
}

# The table's columns other than NAME, at their usual widest (ID, STATUS "waiting_for_input", PHASE,
# ACTIVITY, VER), plus two spaces between columns (a padding space and the box's blank separator): what
# is left of the console's width goes to NAME.
_FIXED = 8 + 17 + 8 + 8 + 3 + 2 * 5
_MIN_NAME = 12


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def console(stderr: bool = False) -> Console:
    """A console for one command's output: colour on a terminal only (and never with NO_COLOR), width
    from the terminal (80 when not a terminal). Strings print as they are: no console markup, no
    ``:emoji:`` codes, no automatic highlighting, so a contract named ``[wip] :x:`` shows as typed;
    style with ``rich.text.Text`` instead of markup."""
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d {h}h" if h else f"{d}d"


def ago(when: str | datetime | None, now: datetime | None = None) -> str:
    """How long ago, to one unit: ``5s ago``, ``12m ago``, ``3h ago``, ``2d ago`` (``-`` if unknown)."""
    moment = parse_time(when) if isinstance(when, str) or when is None else when
    if moment is None:
        return "-"
    s = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def short_id(value: object) -> str:
    return str(value)[:8]


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def one_line(text: object) -> str:
    """``text`` with line breaks and tabs as spaces, so one record stays on one line."""
    return " ".join(str(text).split())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def contracts_table(contracts: Sequence[Mapping[str, Any]], now: datetime | None = None, width: int = 80) -> Table:
    """The ``contracts list`` table for a console ``width`` columns wide (pass ``console.width``)."""
    name_width = max(_MIN_NAME, width - _FIXED)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("NAME", no_wrap=True, overflow="ellipsis", max_width=name_width)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PHASE", no_wrap=True, overflow="ellipsis", max_width=12)
    table.add_column("ACTIVITY", no_wrap=True, justify="right")
    table.add_column("VER", no_wrap=True, justify="right")
    for c in contracts:
        table.add_row(
            short_id(c.get("id", "")),
            Text(_cut(one_line(c.get("name", "")), name_width)),
            status_text(str(c.get("status", ""))),
            Text(str(c.get("phase", ""))),
            ago(c.get("last_activity_at"), now),
            str(c.get("version", "")),
        )
    return table


def compact_line(contract: Mapping[str, Any]) -> str:
    return (
        f"{short_id(contract.get('id', ''))} {contract.get('status', '')} "
        f"{contract.get('phase', '')} {one_line(contract.get('name', ''))}"
    )
