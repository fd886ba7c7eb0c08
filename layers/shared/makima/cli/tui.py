"""The ``contracts monitor`` dashboard (Textual): a table of the watched contracts, the latest events, and
a status bar.

- ``Board``: the table's rows and how each event changes them; plain Python, no UI.
- ``MonitorApp``: shows a ``Board`` and consumes an async iterator of events and notices (normally
  ``monitor_stream.events``: the connection is not the app's business, so tests feed it what they like).
- ``HttpLookup``: fetches a contract the table does not know yet (for its name), off the UI's path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Log, Static

from makima.cli import config
from makima.cli.monitor import short_id, text_line
from makima.cli.monitor_stream import Item, MonitorError, Notice, Selection
from makima.cli.output import STATUS_STYLES
from makima.client.api import NO_RETRY, ApiError, MakimaApi

# Events that move a contract's last_activity_at (docs/api.md, "Activity and staleness"): after one, the
# contract is not stale any more.
ACTIVITY_TYPES = frozenset(
    {
        "phase_changed",
        "deliverable_completed",
        "task_spawned",
        "task_completed",
        "question_asked",
        "question_answered",
        "chat_message",
        "heartbeat",
    }
)
FINISHED_STATUSES = frozenset({"completed", "failed", "archived"})
LOG_LINES = 500
COLUMNS = (
    ("contract", "Contract"),
    ("status", "Status"),
    ("phase", "Phase"),
    ("supervisor", "Supervisor"),
    ("activity", "Activity"),
    ("last", "Last activity (UTC)"),
)


@dataclass
class Row:
    id: str
    name: str = "…"
    status: str = "?"
    phase: str = "?"
    supervisor: str = ""
    progress: int | None = None
    activity: str = ""
    last_activity: str = ""
    stale: bool = False
    seq: int = 0  # the higher, the newer the contract is to the board

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def cells(self) -> dict[str, str]:
        supervisor = self.supervisor or "—"
        if self.supervisor and self.progress is not None:
            supervisor += f" {self.progress}%"
        return {
            "contract": f"{_clip(self.name, 32)} {short_id(self.id)}",
            "status": self.status + (" (stale)" if self.stale else ""),
            "phase": self.phase,
            "supervisor": supervisor,
            "activity": _clip(self.activity, 48),
            "last": _when(self.last_activity),
        }


@dataclass(frozen=True, slots=True)
class Change:
    contract_id: str
    removed: bool = False
    reordered: bool = False  # a new row, or one whose status changed: its place in the order may differ
    lookup: bool = False  # the row lacks details (name, …) the HTTP API has


class Board:
    """The watched contracts, live ones first, newest first. A row leaves when its contract leaves the
    watched statuses, is deleted, or, with ``stale_only``, shows activity again or finishes."""

    def __init__(
        self,
        *,
        contract_ids: frozenset[str] | None = None,
        statuses: frozenset[str] | None = None,
        stale_only: bool = False,
    ) -> None:
        self.contract_ids = contract_ids
        self.statuses = statuses
        self.stale_only = stale_only
        self.rows: dict[str, Row] = {}
        self._seq = 0

    def _new_row(self, contract_id: str) -> Row:
        self._seq += 1
        row = self.rows[contract_id] = Row(contract_id, seq=self._seq)
        return row

    def load(self, contracts: Iterable[Mapping[str, Any]], stale: Iterable[str] = ()) -> None:
        """Rows for ``contracts``, newest first (as GET /contracts lists them)."""
        stale_now = set(stale)
        for contract in reversed(list(contracts)):
            row = self._from_contract(self._new_row(str(contract["id"])), contract)
            row.stale = row.id in stale_now

    def replace(self, contracts: Iterable[Mapping[str, Any]], stale: Iterable[str] = ()) -> None:
        """The rows of a fresh snapshot in place of all of them (after the monitor said ``reload``: the
        events that would have moved the rows were not replayed)."""
        self.rows.clear()
        self.load(contracts, stale)

    def ordered(self) -> list[Row]:
        """The rows as the table shows them: contracts that can still work first, then newest first."""
        return sorted(self.rows.values(), key=lambda r: (r.finished, -r.seq))

    def update_contract(self, contract: Mapping[str, Any]) -> Change | None:
        """Fill a row in from the HTTP API's contract (after a lookup)."""
        row = self.rows.get(str(contract.get("id")))
        if row is None:
            return None
        before = row.status
        self._from_contract(row, contract)
        return self._settle(row, reordered=row.status != before)

    @staticmethod
    def _from_contract(row: Row, contract: Mapping[str, Any]) -> Row:
        row.name = str(contract.get("name") or row.name)
        row.status = str(contract.get("status") or row.status)
        row.phase = str(contract.get("phase") or row.phase)
        row.last_activity = str(contract.get("last_activity_at") or row.last_activity)
        return row

    def apply(self, event: Mapping[str, Any]) -> Change | None:
        """Apply one event; what changed (None: nothing the table shows)."""
        cid = event.get("contract_id")
        if not cid:
            return None
        cid = str(cid)
        if self.contract_ids is not None and cid not in self.contract_ids:
            return None
        kind = event.get("type")
        data: Mapping[str, Any] = event.get("data") or {}
        if kind == "contract_deleted":
            return Change(cid, removed=True) if self.rows.pop(cid, None) else None
        row = self.rows.get(cid)
        lookup = added = False
        if row is None:
            if self.stale_only and kind != "stale_detected":
                return None
            row = self._new_row(cid)
            lookup, added = kind != "contract_created", True
        before = row.status
        if kind == "contract_created":
            row.name = str(data.get("name") or row.name)
            row.phase = str(data.get("phase") or row.phase)
            row.status = str(data.get("status") or row.status)
            row.last_activity = str(event.get("timestamp") or "")
        elif kind == "contract_updated":
            lookup = lookup or "name" in (data.get("changed") or [])
        elif kind == "status_changed":
            row.status = str(data.get("new_status") or row.status)
            if row.status in FINISHED_STATUSES:
                row.stale = False
        elif kind == "phase_changed":
            row.phase = str(data.get("new_phase") or row.phase)
        elif kind == "supervisor_state_changed":
            row.supervisor = str(data.get("new_state") or row.supervisor)
        elif kind == "heartbeat":
            row.supervisor = str(data.get("state") or row.supervisor)
            progress = data.get("progress")
            row.progress = progress if isinstance(progress, int) else row.progress
            row.activity = str(data.get("activity") or "")
        elif kind == "stale_detected":
            row.stale = True
            row.last_activity = str(data.get("last_activity") or row.last_activity)
        if kind in ACTIVITY_TYPES:
            row.stale = False
            row.last_activity = str(event.get("timestamp") or row.last_activity)
        return self._settle(row, reordered=added or row.status != before, lookup=lookup)

    def _settle(self, row: Row, *, reordered: bool = False, lookup: bool = False) -> Change:
        """Drop the row when it no longer belongs on the board."""
        known = row.status != "?"
        leaves = (known and self.statuses is not None and row.status not in self.statuses) or (
            self.stale_only and not row.stale
        )
        if leaves:
            self.rows.pop(row.id, None)
            return Change(row.id, removed=True)
        return Change(row.id, reordered=reordered, lookup=lookup)


Source = Callable[[], AsyncIterator[Item]]
Lookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]
# A fresh snapshot: the contracts to show and which of them are stale (``monitor.load_contracts``).
Reload = Callable[[], Awaitable[tuple[list[dict[str, Any]], set[str]]]]


class MonitorApp(App[None]):
    """The dashboard. ``source()`` is iterated once, in a worker; ``handle`` takes each item."""

    TITLE = "makima contracts monitor"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #contracts { height: 3fr; }
    #events { height: 2fr; border-top: solid $primary; }
    #status { height: 1; background: $panel; color: $text; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("p", "toggle_pause", "Pause log"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        source: Source,
        board: Board,
        *,
        selection: Selection | None = None,
        lookup: Lookup | None = None,
        duration: float | None = None,
        source_name: str = "",
        filter_text: str = "",
        reload: Reload | None = None,
    ) -> None:
        super().__init__()
        self.reload = reload
        self.source = source
        self.board = board
        self.selection = selection or Selection()
        self.lookup = lookup
        self.duration = duration
        self.source_name = source_name
        self.sub_title = filter_text
        self.error: MonitorError | None = None
        self.events_seen = 0
        self.events_shown = 0
        self.paused = False
        self.connection = f"connecting to {source_name}…" if source_name else "connecting…"
        self.log_lines: deque[str] = deque(maxlen=LOG_LINES)  # what the log shows (or will, once unpaused)
        self._held: deque[str] = deque(maxlen=LOG_LINES)
        self._looking_up: set[str] = set()
        # Held here, not queried: the stream may still deliver while the app shuts its screen down.
        self.table: DataTable[str | Text] = DataTable(id="contracts", cursor_type="row", zebra_stripes=True)
        self.event_log = Log(id="events", max_lines=LOG_LINES)
        self.status_bar = Static(id="status")

    def compose(self) -> ComposeResult:
        yield Header(icon="◉")
        yield self.table
        yield self.event_log
        yield self.status_bar
        yield Footer()

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.table.add_column(label, key=key)
        self._show_board()
        self._refresh_status()
        self.run_worker(self._consume(), name="monitor", exclusive=True)
        if self.duration is not None:
            self.set_timer(self.duration, self.exit)

    async def _consume(self) -> None:
        stream = self.source()
        try:
            async for item in stream:
                self.handle(item)
        except MonitorError as exc:
            self.error = exc
            self.exit(return_code=1)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    def handle(self, item: Item) -> None:
        """One event or notice from the stream."""
        if isinstance(item, Notice):
            self._notice(item)
            return
        self.events_seen += 1
        change = self.board.apply(item)
        if change is not None:
            self._show_change(change)
        if item.get("type") != "heartbeat" and self.selection.shows(item):
            self.events_shown += 1
            self._append_log(text_line(item))
        self._refresh_status()

    def _notice(self, notice: Notice) -> None:
        if notice.kind == "reload" and self.reload is not None:
            self._append_log(f"-- {notice.message}: reloading the table")
            self.run_worker(self._reload_board(), name="reload", exclusive=False)
        elif notice.kind == "connected":
            self.connection = f"● {notice.message}"
        elif notice.kind == "reconnecting":
            self.connection = f"○ {notice.message}"
        else:
            self._append_log(f"-- {notice.message}")
        self._refresh_status()

    def _append_log(self, line: str) -> None:
        self.log_lines.append(line)
        if self.paused:
            self._held.append(line)
        else:
            self.event_log.write_line(line)

    def _show_change(self, change: Change) -> None:
        if change.removed or change.reordered:
            self._show_board()
        row = self.board.rows.get(change.contract_id)
        if row is None:
            return
        if not change.reordered:
            self._show_row(row)
        if change.lookup and self.lookup is not None and row.id not in self._looking_up:
            self._looking_up.add(row.id)
            self.run_worker(self._look_up(row.id), group="lookup")

    def _show_board(self) -> None:
        """Every row again, in the board's order; the cursor stays on its contract."""
        table = self.table
        current = None
        if table.row_count and table.is_valid_row_index(table.cursor_row):
            current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for row in self.board.ordered():
            cells = _styled(row)
            table.add_row(*(cells[key] for key, _ in COLUMNS), key=row.id)
        if current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current), animate=False)

    def _show_row(self, row: Row) -> None:
        if row.id not in self.table.rows:
            self._show_board()
            return
        for key, value in _styled(row).items():
            self.table.update_cell(row.id, key, value, update_width=True)

    async def _reload_board(self) -> None:
        """The table from a fresh snapshot (``reload``); events keep arriving meanwhile, and the rows they
        moved are moved again by the snapshot, which is newer."""
        assert self.reload is not None
        try:
            contracts, stale = await self.reload()
        except Exception as exc:  # the API is unreachable: the live events go on, the table may lag
            self._append_log(f"-- reloading failed ({exc}); the table shows live events only")
            return
        self.board.replace(contracts, stale)
        self._show_board()
        self._refresh_status()

    async def _look_up(self, contract_id: str) -> None:
        assert self.lookup is not None
        try:
            contract = await self.lookup(contract_id)
        finally:
            self._looking_up.discard(contract_id)
        if contract is not None:
            change = self.board.update_contract(contract)
            if change is not None:
                self._show_change(change)
                self._refresh_status()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.event_log.write_lines(list(self._held))
            self._held.clear()
        self._refresh_status()

    def status_text(self) -> str:
        parts = [
            self.connection,
            f"{len(self.board.rows)} contract(s)",
            f"{self.events_shown} event(s) shown",
        ]
        if self.paused:
            parts.append(f"log paused ({len(self._held)} held; p resumes)")
        return "  |  ".join(parts)

    def _refresh_status(self) -> None:
        self.status_bar.update(self.status_text())


class HttpLookup:
    """``GET /api/v1/contracts/{id}`` through the SDK's client, on a worker thread so the UI's loop never
    waits on it; None when it fails (the row keeps what the events told)."""

    def __init__(self, api_url: str, token: str) -> None:
        # One attempt: a name is a nicety, and the contract's next event asks again.
        self.api = MakimaApi(api_url, token, timeout=10.0, retry=NO_RETRY, transport=config.TRANSPORT)

    async def get(self, contract_id: str) -> Mapping[str, Any] | None:
        try:
            return await asyncio.to_thread(self.api.contract, contract_id)
        except ApiError:
            return None


def _styled(row: Row) -> dict[str, str | Text]:
    cells: dict[str, str | Text] = dict(row.cells())
    cells["status"] = Text(row.cells()["status"], style="bold red" if row.stale else STATUS_STYLES.get(row.status, ""))
    return cells


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(timestamp: str) -> str:
    if not timestamp:
        return ""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%m-%d %H:%M:%S")
