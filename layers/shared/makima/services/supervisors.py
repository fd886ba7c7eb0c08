"""Supervisor use cases (seed Phase 3): start, heartbeats, status, sync, persisted state, timeouts.

Restoration lives in ``services/restoration.py``; daemons and worktrees in ``services/daemons.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload
from uuid import UUID

from makima.db import daemons as daemons_sql
from makima.db import events as events_sql
from makima.db import heartbeats as heartbeats_sql
from makima.db import supervisors as supervisors_sql
from makima.db.connection import Conn, Database, reading, transaction
from makima.domain import monitor as monitor_event
from makima.domain import paging
from makima.domain.bounds import MAX_SEQ_STEP
from makima.domain.models import Contract
from makima.domain.paging import Page
from makima.domain.principals import Principal
from makima.domain.supervisors import (
    CHECKPOINT_SAVE_POINTS,
    CONVERSATION_PAGE_BYTES,
    DEFAULT_CONVERSATION_MAX_BYTES,
    Heartbeat,
    HeartbeatRecord,
    InvalidHeartbeat,
    JsonText,
    SavedState,
    SavePoint,
    SupervisorRecord,
    SupervisorState,
    TimestampWindow,
    compaction,
)
from makima.errors import (
    Conflict,
    Inconsistent,
    InvalidCursor,
    InvalidRequest,
    OutOfBounds,
    StaleTimestamp,
    SupervisorDead,
    SupervisorNotFound,
    UnknownReference,
    UnknownSupervisorTask,
)
from makima.services.common import (
    check_version,
    load_contract,
    not_found,
    record,
    require_not_paused,
    require_workable,
    scope,
)

if TYPE_CHECKING:
    from makima.db.async_pool import AsyncPooledDatabase

# What a service hands its ``answer`` (built inside its transaction: see ``get_state``) turns into.
T = TypeVar("T")


def _not_found(contract_id: UUID) -> SupervisorNotFound:
    return SupervisorNotFound(f"contract {contract_id} has no supervisor", {"contract_id": str(contract_id)})


def load_supervisor(conn: Conn, contract_id: UUID, *, lock: bool = False) -> dict[str, Any]:
    row = supervisors_sql.current(conn, contract_id, for_update=lock)
    if row is None:
        raise _not_found(contract_id)
    return row


def load_with_contract(
    conn: Conn, principal: Principal, contract_id: UUID, *, lock: bool = False
) -> tuple[Contract, dict[str, Any]]:
    """The caller's contract and its supervisor (row-locked when ``lock``) in one statement:
    ``ContractNotFound`` first, as ``load_contract`` then ``load_supervisor`` would answer."""
    return _loaded(contract_id, *supervisors_sql.with_contract(conn, contract_id, scope(principal), for_update=lock))


def _loaded(
    contract_id: UUID, contract: dict[str, Any] | None, sup: dict[str, Any] | None
) -> tuple[Contract, dict[str, Any]]:
    if contract is None:
        raise not_found(contract_id)
    if sup is None:
        raise _not_found(contract_id)
    return Contract.model_validate(contract), sup


def _daemon_of(conn: Conn, contract: Contract, daemon_id: UUID | None) -> dict[str, Any] | None:
    """A daemon of the contract's owner, whoever asks (an admin sees every daemon, but a supervisor on
    another owner's daemon could not be run by it, and would link two tenants); ``NotFound`` otherwise."""
    if daemon_id is None:
        return None
    daemon = daemons_sql.get(conn, daemon_id, contract.owner_id)
    if daemon is None:
        raise UnknownReference(f"daemon {daemon_id} not found", {"daemon_id": str(daemon_id)})
    return daemon


# --- start ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    contract: Contract
    supervisor: SupervisorRecord


def start_supervisor(
    db: Database, principal: Principal, contract_id: UUID, *, daemon_id: UUID | None, name: str = "supervisor"
) -> Started:
    """Create the supervisor task and its state row on ``daemon_id``; the contract becomes active. One
    live supervisor per contract (the unique index on tasks answers a second with 409)."""
    from makima.services.tasks import spawn_task_locked

    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        require_workable(contract, "start a supervisor")
        require_not_paused(contract, "start a supervisor")
        daemon = _daemon_of(conn, contract, daemon_id)
        task = spawn_task_locked(
            conn,
            principal,
            contract,
            name=name,
            is_supervisor=True,
            daemon=daemon["name"] if daemon else None,
            daemon_id=daemon_id,
        )
        sup = load_supervisor(conn, contract_id)
        contract = load_contract(conn, principal, contract_id)
        record(
            conn,
            contract,
            principal,
            "supervisor_started",
            supervisor_task_id=str(task.id),
            daemon_id=str(daemon_id) if daemon_id else None,
        )
        return Started(contract, SupervisorRecord.model_validate(sup))


# --- heartbeats -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatAnswer:
    task_id: UUID | None  # None only for a batch item too malformed to name its supervisor
    accepted: bool
    error: str | None = None
    sync_requested: bool = False
    restart_requested: bool = False
    superseded: bool = False
    code: str | None = None  # the error code of a refused heartbeat (errors.py), as a request would get it
    errors: list[dict[str, Any]] | None = None  # the fields at fault of an invalid batch item


def _refused(task_id: UUID | None, code: str, message: str, **more: Any) -> HeartbeatAnswer:
    return HeartbeatAnswer(task_id, False, message, code=code, **more)


# Told of accepted heartbeats (their monitor envelopes) and whether state-change events were logged.
HeartbeatMonitor = Callable[[Sequence[Mapping[str, Any]], bool], None]


class _Envelopes(Sequence[Mapping[str, Any]]):
    """The monitor envelopes of a request's accepted heartbeats, built when first read. Their number is
    known at once; the envelopes themselves are wanted only while a monitor is open (the local pump and
    the Lambda sink count them and look no further otherwise), and building them was a sixth of a
    100-heartbeat batch's server CPU (docs/performance.md, "Change 18")."""

    def __init__(self, count: int, build: Callable[[], list[Mapping[str, Any]]]) -> None:
        self._count = count
        self._build = build
        self._built: list[Mapping[str, Any]] | None = None  # None: not built yet

    def _items(self) -> list[Mapping[str, Any]]:
        if self._built is None:
            self._built = self._build()
        return self._built

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
        return self._items()[index]

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return iter(self._items())


def _state_changed(
    conn: Conn,
    row: dict[str, Any],
    *,
    new_state: str,
    recovered: bool,
    actor: str,
    reason: str | None = None,
) -> None:
    """The ``supervisor_state_changed`` event for a row carrying contract_id, owner_id, task_id and
    old_state (heartbeat ingest and the timeout sweep have no loaded contract to pass to ``record``)."""
    payload: dict[str, Any] = {
        "contract_id": str(row["contract_id"]),
        "supervisor_task_id": str(row["task_id"]),
        "old_state": row["old_state"],
        "new_state": new_state,
        "recovered": recovered,
    }
    if reason is not None:
        payload["reason"] = reason
    events_sql.append(
        conn,
        contract_id=row["contract_id"],
        owner_id=row["owner_id"],
        type="supervisor_state_changed",
        payload=payload,
        actor=actor,
    )


class _Ingest:
    """One heartbeat request's ingest around its statement: the items refused before it (invalid, a bad
    timestamp, no contract) and the rows it carries; then, from the rows it returned, every item's
    answer and what the monitor is told. The statement itself is sent by ``ingest_heartbeats`` (from a
    worker thread) or ``ingest_heartbeats_on_loop`` (from the local stack's event loop)."""

    def __init__(self, principal: Principal, heartbeats: Sequence[Heartbeat | InvalidHeartbeat]) -> None:
        self.principal = principal
        self.count = len(heartbeats)
        window = TimestampWindow.at(datetime.now(UTC))
        self.answers: dict[int, HeartbeatAnswer] = {}
        self.valid: list[tuple[int, Heartbeat, UUID]] = []  # each with its contract_id
        for i, hb in enumerate(heartbeats):
            if isinstance(hb, InvalidHeartbeat):
                self.answers[i] = _refused(hb.task_id, InvalidRequest.code, hb.message, errors=hb.errors)
            elif problem := window.check(hb.timestamp):
                self.answers[i] = _refused(hb.task_id, InvalidRequest.code, problem)
            elif hb.contract_id is None:
                self.answers[i] = _refused(hb.task_id, InvalidRequest.code, "contract_id is required in a batch")
            else:
                self.valid.append((i, hb, hb.contract_id))
        # A heartbeat's fields as they are (no nested models to dump): model_dump per item was 6 % of a
        # 100-heartbeat batch's server CPU (issue 15).
        self.rows = [vars(hb) for _, hb, _ in self.valid]
        self.owner = scope(principal)

    def finish(self, rows: Sequence[dict[str, Any]], monitor: HeartbeatMonitor | None) -> list[HeartbeatAnswer]:
        if isinstance(rows, heartbeats_sql.PlainBatch):
            return self._finish_plain(rows, monitor)
        answers = self.answers
        by_position = {r["ord"]: r for r in rows}
        accepted: list[tuple[UUID, Heartbeat, UUID]] = []
        for position, (i, hb, contract_id) in enumerate(self.valid, start=1):
            r = by_position.get(position)
            if r is None:
                answers[i] = _refused(hb.task_id, SupervisorNotFound.code, "no such supervisor on that contract")
            elif r["superseded"]:
                answers[i] = _refused(
                    hb.task_id,
                    Conflict.code,
                    f"superseded: the supervisor was restored as generation {r['generation']}",
                    superseded=True,
                )
            else:
                answers[i] = HeartbeatAnswer(
                    hb.task_id, True, None, bool(r["sync_requested"]), bool(r["restart_requested"])
                )
                # A late heartbeat is history only: the monitor would show a finished supervisor working.
                if monitor is not None and not r["late"]:
                    accepted.append((r["owner_id"], hb, contract_id))
        logged = any(
            r["was_dead"] or r["old_state"] != r["new_state"] for r in rows if not r["superseded"] and not r["late"]
        )
        self._tell(monitor, accepted, logged)
        return [answers[i] for i in range(self.count)]

    def plain_answers(self) -> list[HeartbeatAnswer]:
        """The answers if the plain statement applies the batch: every valid heartbeat accepted with
        nothing waiting for it, the others refused as they are."""
        accepted = {i: HeartbeatAnswer(hb.task_id, True) for i, hb, _ in self.valid}
        return [self.answers.get(i) or accepted[i] for i in range(self.count)]

    def _finish_plain(
        self, batch: heartbeats_sql.PlainBatch, monitor: HeartbeatMonitor | None
    ) -> list[HeartbeatAnswer]:
        """``finish`` for a batch the plain statement applied: answered without building its rows."""
        self.tell_plain(batch, monitor)
        return self.plain_answers()

    def tell_plain(self, batch: heartbeats_sql.PlainBatch, monitor: HeartbeatMonitor | None) -> None:
        """The monitor told of a batch the plain statement applied: every valid heartbeat, nothing logged."""
        if monitor is not None:
            owners = batch.owner_ids
            self._tell(monitor, [(owners[k], hb, c) for k, (_, hb, c) in enumerate(self.valid)], False)

    def _tell(
        self, monitor: HeartbeatMonitor | None, accepted: list[tuple[UUID, Heartbeat, UUID]], logged: bool
    ) -> None:
        """Hand the monitor the accepted heartbeats (each with its contract's owner), built when read."""
        if monitor is None or not (accepted or logged):
            return
        actor = self.principal.actor

        def envelopes() -> list[Mapping[str, Any]]:
            return [
                monitor_event.heartbeat(
                    contract_id=contract_id,  # the heartbeat's: the statements match on it
                    owner_id=owner_id,
                    supervisor_task_id=hb.task_id,
                    state=hb.state.value,
                    activity=hb.current_activity,
                    progress=hb.progress,
                    at=hb.timestamp,
                    actor=actor,
                )
                for owner_id, hb, contract_id in accepted
            ]

        monitor(_Envelopes(len(accepted), envelopes), logged)


def ingest_heartbeats(
    db: Database,
    principal: Principal,
    heartbeats: Sequence[Heartbeat | InvalidHeartbeat],
    *,
    daemon_id: UUID | None = None,
    monitor: HeartbeatMonitor | None = None,
) -> list[HeartbeatAnswer]:
    """Apply a batch in one statement. Each heartbeat is accepted or refused on its own, with the error
    code a request of its own would get (``INVALID_REQUEST``: a malformed item or a bad timestamp;
    ``SUPERVISOR_NOT_FOUND``; ``CONFLICT``: superseded); the answer tells each supervisor what the
    server wants from it. ``monitor``
    gets the monitor envelopes of the accepted ones (heartbeats are not in the event log), and whether
    the statement logged events (state changes), which then wait in the outbox."""
    ingest = _Ingest(principal, heartbeats)
    # One statement (state, history, contract activity, daemon, events), so no BEGIN/COMMIT around it.
    with db.connection() as conn:
        rows = heartbeats_sql.ingest(conn, ingest.rows, ingest.owner, daemon_id=daemon_id, actor=principal.actor)
    return ingest.finish(rows, monitor)


async def ingest_heartbeats_on_loop(
    db: AsyncPooledDatabase,
    principal: Principal,
    heartbeats: Sequence[Heartbeat | InvalidHeartbeat],
    *,
    daemon_id: UUID | None = None,
    monitor: HeartbeatMonitor | None = None,
    meanwhile: Callable[[list[HeartbeatAnswer]], object] | None = None,
) -> list[HeartbeatAnswer]:
    """``ingest_heartbeats`` with its statement sent on an asynchronous connection, awaited on the event
    loop instead of run on a worker thread (db/async_pool.py); the same answers, events and monitor.

    ``meanwhile``: called, while a batch's plain statement runs, with the answers the batch gets if it
    was plain (the caller prepares its response then, when the server has nothing else to do); when it
    was, this returns that very list (``is``)."""
    ingest = _Ingest(principal, heartbeats)
    ahead: list[HeartbeatAnswer] | None = None
    prepare: Callable[[], object] | None = None
    if meanwhile is not None:
        tell = meanwhile

        def prepare() -> None:
            nonlocal ahead
            ahead = ingest.plain_answers()
            tell(ahead)

    async with db.connection() as conn:
        rows = await heartbeats_sql.ingest_on_loop(
            conn, ingest.rows, ingest.owner, daemon_id=daemon_id, actor=principal.actor, meanwhile=prepare
        )
    if ahead is not None and isinstance(rows, heartbeats_sql.PlainBatch):
        ingest.tell_plain(rows, monitor)
        return ahead
    return ingest.finish(rows, monitor)


def single_heartbeat(contract_id: UUID, hb: Heartbeat) -> Heartbeat:
    """The heartbeat of ``POST …/supervisor/heartbeat`` as a batch item, after the checks a request of
    its own answers with an error (``Inconsistent``, ``StaleTimestamp``) rather than a refused item."""
    if hb.contract_id is not None and hb.contract_id != contract_id:
        raise Inconsistent("contract_id in the body differs from the path", {"contract_id": str(hb.contract_id)})
    problem = TimestampWindow.at(datetime.now(UTC)).check(hb.timestamp)
    if problem:
        raise StaleTimestamp(problem, {"field": "timestamp"})
    return hb.model_copy(update={"contract_id": contract_id})


def _unknown_task(contract_id: UUID, hb: Heartbeat) -> UnknownSupervisorTask:
    """The error of a single heartbeat that matched no supervisor (neither accepted nor superseded) on
    a contract of the caller's (another owner's contract is ``ContractNotFound``, checked first)."""
    return UnknownSupervisorTask(
        f"contract {contract_id} has no supervisor with task {hb.task_id}",
        {"contract_id": str(contract_id), "task_id": str(hb.task_id)},
    )


def heartbeat(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    hb: Heartbeat,
    *,
    monitor: HeartbeatMonitor | None = None,
) -> HeartbeatAnswer:
    """One supervisor's heartbeat. Refusals are errors here (the batch endpoint reports them per item)."""
    answer = ingest_heartbeats(db, principal, [single_heartbeat(contract_id, hb)], monitor=monitor)[0]
    if not answer.accepted and not answer.superseded:
        with transaction(db) as conn:
            load_contract(conn, principal, contract_id)  # ContractNotFound for other owners
        raise _unknown_task(contract_id, hb)
    return answer


async def heartbeat_on_loop(
    db: AsyncPooledDatabase,
    principal: Principal,
    contract_id: UUID,
    hb: Heartbeat,
    *,
    monitor: HeartbeatMonitor | None = None,
) -> HeartbeatAnswer:
    """``heartbeat`` with its statements sent from the event loop (db/async_pool.py): the same checks,
    answers and errors; an unmatched one reads its contract on the same pool."""
    answer = (await ingest_heartbeats_on_loop(db, principal, [single_heartbeat(contract_id, hb)], monitor=monitor))[0]
    if not answer.accepted and not answer.superseded:
        async with db.connection() as conn:
            contract, _ = await supervisors_sql.with_contract_on_loop(conn, contract_id, scope(principal))
        if contract is None:
            raise not_found(contract_id)
        raise _unknown_task(contract_id, hb)
    return answer


# How far back the heartbeat history goes (seed 3.2): the endpoint shows no older row, and the
# retention job drops the partitions past it (``maintain_heartbeat_partitions``).
HEARTBEAT_RETENTION = timedelta(hours=24)
# Rows of one (received_at, sent_at) a history cursor may skip: one batch holds at most 500 heartbeats.
HISTORY_MAX_SKIP = 10_000


def heartbeat_history(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    limit: int,
    *,
    cursor: str | None = None,
    now: datetime | None = None,
) -> Page[HeartbeatRecord]:
    """A page of the heartbeats of the contract's supervisor received in the last 24 hours at ``now``,
    newest first. The cursor is the last row's (received_at, sent_at) and how many rows of that key
    were returned so far (``db/heartbeats.py: history``)."""
    since = (now or datetime.now(UTC)) - HEARTBEAT_RETENTION
    before, skip = None, 0
    if cursor:
        received, sent, skip = paging.decode_cursor(cursor, (datetime, datetime, int))
        before = (received, sent)
        if skip < 0 or skip > HISTORY_MAX_SKIP:
            raise InvalidCursor(
                "invalid cursor: pass back the next_cursor of a previous page", {"cursor": cursor[:100]}
            )
    with transaction(db) as conn:
        _, sup = load_with_contract(conn, principal, contract_id)
        rows = heartbeats_sql.history(conn, sup["task_id"], limit + 1, since=since, before=before, skip=skip)
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit and items:
        last = (items[-1]["received_at"], items[-1]["sent_at"])
        same = sum(1 for r in items if (r["received_at"], r["sent_at"]) == last)
        # rows of the cursor's key seen on earlier pages count too, when this page did not move past it
        seen = same + (skip if before == last else 0)
        next_cursor = paging.encode_cursor((*last, seen))
    return Page([HeartbeatRecord.model_validate(r) for r in items], next_cursor)


# --- status and sync ------------------------------------------------------------------------------------


def status(db: Database, principal: Principal, contract_id: UUID) -> SupervisorRecord:
    with transaction(db) as conn:
        return SupervisorRecord.model_validate(load_with_contract(conn, principal, contract_id)[1])


# The longest a sync call waits for the supervisor's next heartbeat: API Gateway ends an HTTP API
# integration at 30 s, so a longer wait would turn into API Gateway's own error, not our answer.
MAX_SYNC_WAIT = 25.0


def default_sync_wait(heartbeat_interval: float) -> float:
    """About one heartbeat interval (plus its jitter and a little transit), within ``MAX_SYNC_WAIT``."""
    return min(MAX_SYNC_WAIT, heartbeat_interval * 1.2 + 2.0)


@dataclass(frozen=True)
class SyncResult:
    synced: bool
    supervisor: SupervisorRecord  # as the collecting heartbeat left it (synced), else as last known
    waited_seconds: float


@dataclass(frozen=True)
class SyncAsked:
    """A standing sync request: whom it asks, since when, and the supervisor as it was then."""

    task_id: UUID
    requested_at: datetime
    supervisor: SupervisorRecord


def ask_sync(db: Database, principal: Principal, contract_id: UUID) -> SyncAsked:
    """Ask the supervisor to report its full state with its next heartbeat (the heartbeat answer's
    ``sync_requested``; asking again before one came keeps the first request). A supervisor that
    cannot answer is refused at once with ``SupervisorDead``: dead (its heartbeat timed out) or
    stopped (it saved at ``shutdown``); restore or restart it. Waiting for the heartbeat is
    ``services/sync_waits.py``."""
    with transaction(db) as conn:
        _, sup = load_with_contract(conn, principal, contract_id, lock=True)
        if sup["dead_at"] is not None or sup["stopped_at"] is not None:
            dead = sup["dead_at"] is not None
            raise SupervisorDead(
                "the supervisor stopped heartbeating; restore or restart it"
                if dead
                else "the supervisor was shut down cleanly; restore or restart it",
                {
                    "contract_id": str(contract_id),
                    "dead_since": sup["dead_at"].isoformat() if dead else None,
                    "stopped_since": None if dead else sup["stopped_at"].isoformat(),
                },
            )
        sup = supervisors_sql.request_sync(conn, sup["task_id"])
    return SyncAsked(sup["task_id"], sup["sync_requested_at"], SupervisorRecord.model_validate(sup))


def sync_delivered(db: Database, asked: SyncAsked) -> SupervisorRecord | None:
    """The supervisor as the heartbeat that collected ``asked`` left it; None while none has."""
    with db.connection() as conn:
        done = supervisors_sql.sync_delivered_since(conn, asked.task_id, asked.requested_at)
    return None if done is None else SupervisorRecord.model_validate(done)


# --- persisted state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateSave:
    generation: int
    seq: int
    save_point: SavePoint
    state: SupervisorState
    phase: str
    current_activity: str
    conversation_offset: int
    conversation_append: list[Any]
    pending_questions: list[Any]
    spawned_task_ids: list[UUID]
    waiting_on_task_ids: list[UUID]
    error: str | None
    checkpoint: bool


def _store(
    conn: Conn,
    contract: Contract,
    principal: Principal,
    sup: dict[str, Any],
    s: StateSave,
    fields: dict[str, Any],
    touch: UUID | None,
    max_bytes: int,
) -> dict[str, Any]:
    """Write the save's ``fields``, appending its messages; then, if the kept conversation is over
    ``max_bytes``, compact its oldest messages away (with a ``supervisor_conversation_compacted``
    event). Returns the row as written.

    The append is in the state's own UPDATE, which adds what it stored to ``conversation_bytes``: the
    common save is one statement after its locked read. A row whose size is not known (from before the
    column existed, or after a restore truncated the conversation) is counted from what is stored.

    Compaction rather than refusal: a supervisor cannot shorten a conversation it appends to, so a
    refusal would leave a long-running one unable to save at all (and so unable to be restored where it
    was); its newest messages are what it resumes from, and restoration tells it how many went."""
    task_id, start = sup["task_id"], sup["conversation_start"]
    # Messages before ``start`` were compacted away: a retried save must not bring them back.
    skip = max(0, start - s.conversation_offset)
    offset, messages = s.conversation_offset + skip, s.conversation_append[skip:]
    if sup["conversation_bytes"] is None:
        supervisors_sql.append_conversation(conn, task_id, offset, messages)
        sizes = supervisors_sql.conversation_sizes(conn, task_id)
        fields = {**fields, "conversation_bytes": sum(size for _, size in sizes)}
        row = supervisors_sql.save(conn, task_id, fields, touch_contract=touch)
    else:
        row = supervisors_sql.save(conn, task_id, fields, touch_contract=touch, append=(offset, messages))
    if row["conversation_bytes"] <= max_bytes:
        return row
    plan = compaction(supervisors_sql.conversation_sizes(conn, task_id), max_bytes)
    if plan is None:
        return row
    supervisors_sql.drop_conversation_before(conn, task_id, plan.start)
    record(
        conn,
        contract,
        principal,
        "supervisor_conversation_compacted",
        supervisor_task_id=str(task_id),
        dropped=plan.start - start,
        conversation_start=plan.start,
        kept_bytes=plan.kept_bytes,
        max_bytes=max_bytes,
    )
    return supervisors_sql.save(
        conn, task_id, {"conversation_start": plan.start, "conversation_bytes": plan.kept_bytes}
    )


def _save_fields(s: StateSave, length: int) -> dict[str, Any]:
    """The state row's fields a save writes, its conversation ``length`` messages long."""
    fields: dict[str, Any] = {
        "state": s.state.value,
        "phase": s.phase,
        "current_activity": s.current_activity,
        "pending_questions": s.pending_questions,
        "spawned_task_ids": s.spawned_task_ids,
        "waiting_on_task_ids": s.waiting_on_task_ids,
        "conversation_length": length,
        "error": s.error,
        "last_save_point": s.save_point.value,
        "save_seq": s.seq,
        # A shutdown save: stopped on purpose (not dead, and adoptable); any other: running.
        "stopped_at": datetime.now(UTC) if s.save_point is SavePoint.SHUTDOWN else None,
    }
    if s.checkpoint or s.save_point in CHECKPOINT_SAVE_POINTS:
        fields["last_checkpoint"] = {
            "seq": s.seq,
            "state": s.state.value,
            "phase": s.phase,
            "conversation_length": length,
            "pending_questions": s.pending_questions,
            "spawned_task_ids": [str(t) for t in s.spawned_task_ids],
            "waiting_on_task_ids": [str(t) for t in s.waiting_on_task_ids],
            "current_activity": s.current_activity,
            "at": datetime.now(UTC).isoformat(),
        }
    return fields


def _touched(contract_id: UUID, s: StateSave) -> UUID | None:
    """The contract whose activity (Task 1.5) the save's UPDATE sets: a light heartbeat save is not activity."""
    return contract_id if s.save_point is not SavePoint.HEARTBEAT else None


@dataclass(frozen=True)
class _Plain:
    """A save tried as plain (``supervisors_sql.save_if_plain``): its guard, and what it writes if it is."""

    guard: supervisors_sql.PlainSave
    fields: dict[str, Any]
    touch: UUID | None


def _plain(principal: Principal, contract_id: UUID, s: StateSave, max_bytes: int) -> _Plain:
    # A plain save appends at the end of the conversation: its length is then the offset plus the append.
    guard = supervisors_sql.PlainSave(
        contract_id=contract_id,
        owner=scope(principal),
        generation=s.generation,
        seq=s.seq,
        state=s.state.value,
        offset=s.conversation_offset,
        messages=s.conversation_append,
        max_seq_step=MAX_SEQ_STEP,
        max_bytes=max_bytes,
    )
    length = s.conversation_offset + len(s.conversation_append)
    return _Plain(guard, _save_fields(s, length), _touched(contract_id, s))


def save_state(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    s: StateSave,
    *,
    max_conversation_bytes: int = DEFAULT_CONVERSATION_MAX_BYTES,
) -> SavedState:
    """Persist the supervisor's state at a save point (seed 3.3). Refused with 409 when the save is
    stale: an older generation (a zombie of a restored supervisor) or a sequence number not above the
    last accepted one. The conversation grows by appending at ``conversation_offset``; past
    ``max_conversation_bytes`` its oldest messages are compacted away (``_store``).

    A plain save, a supervisor's usual one (the next sequence number, messages appended at the end, the
    state unchanged, the cap not reached), is one statement that checks and writes
    (``supervisors_sql.save_if_plain``); any other, and every refusal, is decided by
    ``save_state_in_transaction``, which the plain statement leaves as it found it."""
    plain = _plain(principal, contract_id, s, max_conversation_bytes)
    with db.connection() as conn:
        row = supervisors_sql.save_if_plain(conn, plain.guard, plain.fields, touch=plain.touch)
    if row is not None:
        return SavedState.model_validate(row)
    return save_state_in_transaction(db, principal, contract_id, s, max_conversation_bytes=max_conversation_bytes)


async def save_plain_on_loop(
    db: AsyncPooledDatabase,
    principal: Principal,
    contract_id: UUID,
    s: StateSave,
    *,
    max_conversation_bytes: int = DEFAULT_CONVERSATION_MAX_BYTES,
) -> SavedState | None:
    """``save_state``'s plain statement sent from the event loop (db/async_pool.py): the saved state, or
    None when the save is not plain, having written nothing (then ``save_state_in_transaction``)."""
    plain = _plain(principal, contract_id, s, max_conversation_bytes)
    async with db.connection() as conn:
        row = await supervisors_sql.save_if_plain_on_loop(conn, plain.guard, plain.fields, touch=plain.touch)
    return None if row is None else SavedState.model_validate(row)


def save_state_in_transaction(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    s: StateSave,
    *,
    max_conversation_bytes: int = DEFAULT_CONVERSATION_MAX_BYTES,
) -> SavedState:
    """``save_state`` as a transaction (``save_locked``)."""
    with transaction(db) as conn:
        return save_locked(conn, principal, contract_id, s, max_conversation_bytes=max_conversation_bytes)


def save_locked(
    conn: Conn, principal: Principal, contract_id: UUID, s: StateSave, *, max_conversation_bytes: int
) -> SavedState:
    """A save in the caller's transaction: the contract and its supervisor read locked, the save checked
    against them (the refusals), then written (``_store``), and its state change logged."""
    contract, sup = load_with_contract(conn, principal, contract_id, lock=True)
    if s.generation != sup["generation"]:
        raise Conflict(
            f"stale save: generation {s.generation}, the supervisor is now generation {sup['generation']}",
            {"generation": sup["generation"], "save_seq": sup["save_seq"], "reason": "superseded"},
        )
    if s.seq <= sup["save_seq"]:
        raise Conflict(
            f"stale save: sequence {s.seq} is not above the last accepted {sup['save_seq']}",
            {"generation": sup["generation"], "save_seq": sup["save_seq"], "reason": "stale_sequence"},
        )
    if s.seq > sup["save_seq"] + MAX_SEQ_STEP:
        # One wrong value must not push the counter to its top, where every later save would be stale.
        raise OutOfBounds(
            f"seq {s.seq} jumps more than {MAX_SEQ_STEP} above the last accepted {sup['save_seq']}: count by one",
            {"field": "seq", "save_seq": sup["save_seq"], "max_step": MAX_SEQ_STEP},
        )
    if s.conversation_offset > sup["conversation_length"]:
        raise Inconsistent(
            f"conversation_offset {s.conversation_offset} leaves a gap after {sup['conversation_length']} messages",
            {"conversation_length": sup["conversation_length"]},
        )
    length = max(sup["conversation_length"], s.conversation_offset + len(s.conversation_append))
    fields = _save_fields(s, length)
    row = _store(conn, contract, principal, sup, s, fields, _touched(contract_id, s), max_conversation_bytes)
    if sup["state"] != s.state.value:
        record(
            conn,
            contract,
            principal,
            "supervisor_state_changed",
            supervisor_task_id=str(sup["task_id"]),
            old_state=sup["state"],
            new_state=s.state.value,
            recovered=False,
        )
    return SavedState.model_validate(SupervisorRecord.model_validate(row))


@dataclass(frozen=True)
class StateWindow:
    """The persisted state with one page of its conversation: the messages after ``after_seq`` that
    fit ``CONVERSATION_PAGE_BYTES``, as the JSON text of their array, each message as stored (the answer
    passes it on without parsing it); ``next_after_seq`` continues (None: the page reaches the end)."""

    supervisor: SupervisorRecord
    history: JsonText  # the JSON array of the page's messages
    next_after_seq: int | None


def _after(start: int, after_seq: int | None) -> int:
    return max(start - 1, after_seq if after_seq is not None else -1)


def _next(last: int | None, length: int) -> int | None:
    """The cursor after a page ending at ``last``: None when it reaches the end, or when it is empty (the
    end, or nothing stored past the cursor: a damaged conversation)."""
    return last if last is not None and last < length - 1 else None


def conversation_window(
    conn: Conn, task_id: UUID, *, start: int, length: int, after_seq: int | None
) -> tuple[list[Any], int | None]:
    """One page of the kept conversation (seqs ``start`` .. ``length - 1``) after ``after_seq`` (None:
    from the first kept), and the cursor to the next page (None: this page reaches the end)."""
    rows = supervisors_sql.conversation_page(
        conn, task_id, after_seq=_after(start, after_seq), end=length, budget=CONVERSATION_PAGE_BYTES
    )
    return [r["message"] for r in rows], _next(rows[-1]["seq"] if rows else None, length)


def _window(read: supervisors_sql.StateRead, contract_id: UUID) -> StateWindow:
    """The state read's window, after the not-found checks of ``load_with_contract``."""
    sup = SupervisorRecord.model_validate(_loaded(contract_id, read.contract, read.supervisor)[1])
    assert read.page is not None  # a supervisor's row comes with its page (an empty one: "[]")
    return StateWindow(sup, read.page, _next(read.last, sup.conversation_length))


def get_state(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    after_seq: int | None = None,
    answer: Callable[[StateWindow], T],
) -> T:
    """The persisted state with a page of its conversation (``StateWindow``), turned into the answer by
    ``answer`` here, so an answer that cannot be built fails here. One statement
    (``supervisors_sql.state_read``)."""
    with reading(db) as conn:
        read = supervisors_sql.state_read(
            conn, contract_id, scope(principal), after_seq=after_seq, budget=CONVERSATION_PAGE_BYTES
        )
        return answer(_window(read, contract_id))


async def get_state_on_loop(
    db: AsyncPooledDatabase,
    principal: Principal,
    contract_id: UUID,
    *,
    after_seq: int | None = None,
    answer: Callable[[StateWindow], T],
) -> T:
    """``get_state`` with its statement sent on an asynchronous connection from the event loop (the
    local stack: db/async_pool.py): the same statement, checks and answer, no worker thread."""
    async with db.connection() as conn:
        read = await supervisors_sql.state_read_on_loop(
            conn, contract_id, scope(principal), after_seq=after_seq, budget=CONVERSATION_PAGE_BYTES
        )
        return answer(_window(read, contract_id))


# --- restart and timeouts -------------------------------------------------------------------------------


def restart_supervisor(
    db: Database, principal: Principal, contract_id: UUID, *, reason: str | None, expected_version: int | None = None
) -> SupervisorRecord:
    """Ask the running supervisor to restart (its next heartbeat answer says so). A dead one reads no
    answer: the request makes its task adoptable instead, so a live daemon claims and restores it
    (``db/daemons.py``). Recorded as an event either way. ``VersionConflict``, before anything is
    written, when ``expected_version`` is not the contract's."""
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        check_version(contract, expected_version)
        require_workable(contract, "restart the supervisor")
        sup = load_supervisor(conn, contract_id, lock=True)
        supervisors_sql.request_restart(conn, sup["task_id"])
        record(
            conn,
            contract,
            principal,
            "supervisor_restart_requested",
            supervisor_task_id=str(sup["task_id"]),
            reason=reason,
            dead=sup["dead_at"] is not None,
        )
        return SupervisorRecord.model_validate(load_supervisor(conn, contract_id))


TIMEOUT_SWEEP = "supervisor_timeouts"


def detect_dead_supervisors(
    db: Database, timeout: timedelta, *, heartbeats_enabled: bool = True, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The scheduled sweep: supervisors silent for longer than ``timeout`` at ``now`` become
    ``interrupted`` (dead), with an event each; silent daemons become dead. A late heartbeat brings a
    supervisor back (recorded as a recovery). Supervisors stopped on purpose are never swept.

    With the ``supervisor_heartbeat`` flag off (``heartbeats_enabled`` False, read by the caller on
    each run) no supervisor can beat, so the sweep does nothing but remember that it saw the flag off
    (in the database: the sweep runs in containers that keep nothing). Once the flag is back on, that
    moment counts as everyone's last heartbeat: a full timeout of grace before any is marked dead.
    ``now`` None is the database's clock, the one that stamped every heartbeat (not this process's)."""
    with transaction(db) as conn:
        if not heartbeats_enabled:
            supervisors_sql.record_job_paused(conn, TIMEOUT_SWEEP, now)
            return []
        grace_from = supervisors_sql.job_paused_at(conn, TIMEOUT_SWEEP)
        dead = supervisors_sql.mark_dead(conn, timeout, now=now, grace_from=grace_from)
        daemons_sql.mark_dead(conn, timeout, now=now, grace_from=grace_from)
        for r in dead:
            _state_changed(
                conn,
                r,
                new_state=SupervisorState.INTERRUPTED.value,
                recovered=False,
                actor="system",
                reason=f"no heartbeat for {int(timeout.total_seconds())} s",
            )
        return dead


def maintain_heartbeat_partitions(
    db: Database, *, retention: timedelta = HEARTBEAT_RETENTION, now: datetime | None = None
) -> dict[str, list[str]]:
    """The scheduled retention job (hourly): partitions created ahead, those that may hold rows past
    ``retention`` dropped (so no row outlives it by more than an hour: ``heartbeats_sql.drop_expired``)."""
    now = now or datetime.now(UTC)
    with transaction(db) as conn:
        created = heartbeats_sql.ensure_partitions(conn, now=now)
        dropped = heartbeats_sql.drop_expired(conn, now=now, retention=retention)
    return {"created": created, "dropped": dropped}
