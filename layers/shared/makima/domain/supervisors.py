"""Supervisors (seed Phase 3): their states, the heartbeat message, the persisted state, and the pure
parts of restoration (is a stored state consistent, and what to tell the LLM)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, NewType
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from makima.domain.bounds import INT4_MAX
from makima.domain.models import Record
from makima.domain.strict import NO_BOOL, Int, Timestamp

# Clock skew tolerated between a daemon and the service, and how old a heartbeat may be when it
# arrives (a daemon that buffered through a network blip sends late ones; older is not news).
MAX_FUTURE_SKEW = timedelta(minutes=2)
MAX_HEARTBEAT_AGE = timedelta(hours=1)
MAX_ACTIVITY_CHARS = 2000
MAX_PENDING_TASKS = 1000


class SupervisorState(StrEnum):
    INITIALIZING = "initializing"
    IDLE = "idle"
    WORKING = "working"
    WAITING_FOR_USER = "waiting_for_user"
    WAITING_FOR_TASKS = "waiting_for_tasks"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


FINISHED_STATES = frozenset({SupervisorState.COMPLETED, SupervisorState.FAILED})
TEXT = r"^[^\x00]*$"


class Heartbeat(BaseModel):
    """The seed's heartbeat message. Unknown states, progress outside 0-100, oversized activity and
    timestamps from the future or far past are refused before anything is written."""

    model_config = ConfigDict(extra="forbid")

    task_id: UUID
    contract_id: UUID | None = None  # implied by the URL for the single-heartbeat endpoint
    state: SupervisorState
    phase: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    current_activity: str = Field(default="", max_length=MAX_ACTIVITY_CHARS, pattern=TEXT)
    progress: Int = Field(default=0, ge=0, le=100)
    pending_task_ids: list[UUID] = Field(default_factory=list, max_length=MAX_PENDING_TASKS)
    timestamp: Timestamp
    generation: Annotated[int, Field(ge=1, le=INT4_MAX), NO_BOOL] | None = Field(
        default=None, description="The generation the sender was restored as."
    )

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a timezone (e.g. 2026-11-24T10:30:00Z)")
        return value


@dataclass(frozen=True)
class InvalidHeartbeat:
    """A batch item that is not a valid heartbeat (a field out of range, a missing one, not an object).
    It is answered on its own, with ``INVALID_REQUEST`` and the fields at fault, while the rest of the
    batch is ingested: one bad sender must not drop the other supervisors' heartbeats."""

    task_id: UUID | None  # when the item carried a readable one, so the sender can tell which it was
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TimestampWindow:
    """The timestamps a heartbeat may carry when received at ``now``: computed once for a whole batch
    (the two bounds per heartbeat were 3 % of a 100-heartbeat batch's server CPU, issue 15)."""

    earliest: datetime
    latest: datetime

    @classmethod
    def at(cls, now: datetime) -> TimestampWindow:
        return cls(now - MAX_HEARTBEAT_AGE, now + MAX_FUTURE_SKEW)

    def check(self, sent: datetime) -> str | None:
        """Why ``sent`` is unacceptable, or None."""
        if sent > self.latest:
            return f"timestamp {sent.isoformat()} is in the future (more than {MAX_FUTURE_SKEW} ahead of the server)"
        if sent < self.earliest:
            return f"timestamp {sent.isoformat()} is too old (more than {MAX_HEARTBEAT_AGE} behind the server)"
        return None


def check_timestamp(sent: datetime, now: datetime) -> str | None:
    """Why a heartbeat's timestamp is unacceptable at ``now``, or None."""
    return TimestampWindow.at(now).check(sent)


# --- the records the supervisor and daemon services hand out (built from rows; no column names leak) ---


class SupervisorRecord(Record):
    """A supervisor as the service knows it: its latest heartbeat, its persisted state, the requests
    waiting for its next heartbeat, and whether it is dead or stopped."""

    task_id: UUID
    contract_id: UUID
    daemon_id: UUID | None
    state: SupervisorState
    phase: str
    current_activity: str
    progress: int
    pending_task_ids: list[UUID]
    last_heartbeat_at: datetime | None
    heartbeat_count: int
    pending_questions: list[Any]
    spawned_task_ids: list[UUID]
    waiting_on_task_ids: list[UUID]
    conversation_length: int
    conversation_start: int = 0  # the first seq kept: the ones before were compacted away
    last_checkpoint: dict[str, Any] | None
    error: str | None
    last_save_point: str | None
    generation: int
    save_seq: int
    sync_requested_at: datetime | None
    sync_delivered_at: datetime | None
    restart_requested_at: datetime | None
    dead_at: datetime | None
    stopped_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def alive(self) -> bool:
        """False once the heartbeat timed out, until it beats again (a clean stop is not a death)."""
        return self.dead_at is None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    @property
    def adoptable(self) -> bool:
        """Another live daemon may claim its task and restore it: stopped cleanly, or dead with a
        restart asked for (``db/daemons.py`` holds the same rule, plus "not claimed yet")."""
        return self.stopped_at is not None or (self.dead_at is not None and self.restart_requested_at is not None)

    @property
    def last_checkpoint_seq(self) -> int | None:
        seq = self.last_checkpoint.get("seq") if self.last_checkpoint else None
        return int(seq) if isinstance(seq, int) else None


class SavedState(Record):
    """What a state save hands back: enough for the supervisor to continue (the whole state, its
    questions, task lists and conversation included, is the read's), so a save does not read back the
    state it has just sent. Built from a ``SupervisorRecord`` too (its attributes)."""

    task_id: UUID
    generation: int
    save_seq: int
    state: SupervisorState
    phase: str
    conversation_length: int
    conversation_start: int
    last_save_point: str | None
    last_checkpoint_seq: int | None
    updated_at: datetime


class HeartbeatRecord(Record):
    """One row of a supervisor's heartbeat history."""

    sent_at: datetime
    received_at: datetime
    state: str
    phase: str
    current_activity: str
    progress: int
    pending_task_ids: list[UUID]


class DaemonRecord(Record):
    id: UUID
    owner_id: UUID
    name: str
    hostname: str
    capacity: int
    status: str
    registered_at: datetime
    last_heartbeat_at: datetime


class WorktreeRecord(Record):
    """A worktree a daemon holds; the state and times are known when listing, not when asked back."""

    path: str
    branch: str
    task_id: UUID | None
    contract_id: UUID | None
    state: str | None = None
    reported_at: datetime | None = None
    requested_at: datetime | None = None
    removed_at: datetime | None = None


class TaskClaim(Record):
    """A task another daemon may take over (or just took over)."""

    id: UUID
    contract_id: UUID
    name: str
    status: str
    is_supervisor: bool
    daemon_id: UUID | None


class SavePoint(StrEnum):
    """When a supervisor saves (seed 3.3). ``shutdown`` marks a clean stop, which restoration tells
    apart from a crash."""

    LLM_RESPONSE = "llm_response"
    TASK_SPAWN = "task_spawn"
    QUESTION_ASKED = "question_asked"
    PHASE_CHANGE = "phase_change"
    HEARTBEAT = "heartbeat"
    SHUTDOWN = "shutdown"


# Save points after which the state is a good place to restart from.
CHECKPOINT_SAVE_POINTS = frozenset({SavePoint.TASK_SPAWN, SavePoint.PHASE_CHANGE, SavePoint.SHUTDOWN})


@dataclass(frozen=True)
class StoredState:
    """What the database holds for a supervisor, as restoration sees it."""

    state: str
    phase: str
    conversation_length: int
    conversation_seqs: tuple[int, ...]  # the seqs actually stored (start..n-1 when intact)
    pending_questions: list[Any]
    spawned_task_ids: tuple[UUID, ...]
    waiting_on_task_ids: tuple[UUID, ...]
    last_checkpoint: dict[str, Any] | None
    last_save_point: str | None
    save_seq: int
    dead: bool
    conversation_start: int = 0  # messages before it were compacted away on purpose (not missing)

    @property
    def kept_from(self) -> int:
        """The first seq that should be stored: compaction never reaches past the conversation's end."""
        return min(self.conversation_start, self.conversation_length)


@dataclass(frozen=True)
class Consistency:
    ok: bool
    problems: list[str] = field(default_factory=list)


def check_consistency(s: StoredState, *, contract_phases: list[str], known_task_ids: set[UUID]) -> Consistency:
    """Seed 3.4 step 3: can this stored state be resumed as is?"""
    problems: list[str] = []
    if s.state not in {x.value for x in SupervisorState}:
        problems.append(f"unknown state {s.state!r}")
    if s.phase not in contract_phases:
        problems.append(f"phase {s.phase!r} is not a phase of the contract's type")
    if s.conversation_seqs != tuple(range(s.kept_from, s.conversation_length)):
        problems.append(
            f"conversation has {len(s.conversation_seqs)} stored messages, "
            f"expected seq {s.kept_from}..{s.conversation_length - 1}"
        )
    unknown = [t for t in (*s.spawned_task_ids, *s.waiting_on_task_ids) if t not in known_task_ids]
    if unknown:
        problems.append(f"{len(unknown)} task id(s) do not exist on the contract")
    stray = [t for t in s.waiting_on_task_ids if t not in s.spawned_task_ids]
    if stray:
        problems.append(f"{len(stray)} task id(s) waited on were never spawned")
    if not isinstance(s.pending_questions, list):
        problems.append("pending_questions is not a list")
    return Consistency(not problems, problems)


class RestoreMode(StrEnum):
    """How a restored supervisor comes back (seed 3.4), told to it and to the owner."""

    CLEAN = "clean"  # it saved at ``shutdown`` and did not die after: it stopped on purpose
    CRASH = "crash"  # its saved state is consistent, but it stopped without saying goodbye
    CHECKPOINT = "checkpoint"  # its saved state was inconsistent: back to the last checkpoint
    FRESH = "fresh"  # nothing usable was saved


@dataclass(frozen=True)
class RestorePlan:
    """Which state to restore (seed 3.4 steps 1-3), decided from what is stored alone."""

    mode: RestoreMode
    state: str
    phase: str
    conversation_length: int
    spawned_task_ids: tuple[UUID, ...]
    waiting_on_task_ids: tuple[UUID, ...]
    truncate_conversation: bool  # drop stored messages past ``conversation_length``
    warnings: tuple[str, ...]


def restore_mode(s: StoredState) -> RestoreMode:
    """A consistent stored state comes back ``clean`` when its last save was the ``shutdown`` one and
    the supervisor did not die after it (a heartbeat after the shutdown save brings it back to life;
    if it then goes silent, that is a crash), else ``crash``. How long ago it stopped does not matter:
    the timeout sweep never marks a stopped supervisor dead."""
    return RestoreMode.CLEAN if s.last_save_point == SavePoint.SHUTDOWN.value and not s.dead else RestoreMode.CRASH


def checkpoint_state(cp: Mapping[str, Any], stored: StoredState) -> StoredState | None:
    """The stored state as of the last checkpoint, or None when the checkpoint itself is malformed."""
    try:
        length = int(cp["conversation_length"])
        return StoredState(
            state=str(cp["state"]),
            phase=str(cp["phase"]),
            conversation_length=length,
            conversation_seqs=tuple(s for s in stored.conversation_seqs if s < length),
            pending_questions=list(cp.get("pending_questions") or []),
            spawned_task_ids=_uuids(cp.get("spawned_task_ids")),
            waiting_on_task_ids=_uuids(cp.get("waiting_on_task_ids")),
            last_checkpoint=None,
            last_save_point=None,
            save_seq=int(cp.get("seq", 0)),
            dead=stored.dead,
            conversation_start=stored.conversation_start,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _uuids(values: Any) -> tuple[UUID, ...]:
    return tuple(UUID(str(v)) for v in values or ())


NO_SAVED_STATE = "no saved state: starting fresh"
NO_USABLE_CHECKPOINT = "no usable checkpoint: starting fresh"


def plan_restoration(
    stored: StoredState, *, contract_phase: str, contract_phases: list[str], known_task_ids: set[UUID]
) -> RestorePlan:
    """Seed 3.4 steps 1-3: nothing saved → fresh; a consistent state → itself (``clean`` or
    ``crash``); an inconsistent one → its last checkpoint if that is consistent, else fresh. The
    phase is always the contract's (with a warning when the contract moved on since the save)."""
    warnings: list[str] = []
    fresh = RestorePlan(RestoreMode.FRESH, SupervisorState.INITIALIZING.value, contract_phase, 0, (), (), False, ())
    if stored.save_seq == 0:
        return replace(fresh, warnings=(NO_SAVED_STATE,))
    verdict = check_consistency(stored, contract_phases=contract_phases, known_task_ids=known_task_ids)
    if verdict.ok:
        chosen, mode, truncate = stored, restore_mode(stored), False
    else:
        warnings.extend(f"saved state rejected: {p}" for p in verdict.problems)
        cp = checkpoint_state(stored.last_checkpoint, stored) if stored.last_checkpoint else None
        if cp is None or not check_consistency(cp, contract_phases=contract_phases, known_task_ids=known_task_ids).ok:
            warnings.append(NO_USABLE_CHECKPOINT)
            return replace(fresh, truncate_conversation=True, warnings=tuple(warnings))
        chosen, mode, truncate = cp, RestoreMode.CHECKPOINT, True
    if chosen.phase != contract_phase:
        warnings.append(f"the contract moved on to phase {contract_phase!r} since the save in {chosen.phase!r}")
    return RestorePlan(
        mode=mode,
        state=chosen.state,
        phase=contract_phase,
        conversation_length=chosen.conversation_length,
        spawned_task_ids=chosen.spawned_task_ids,
        waiting_on_task_ids=chosen.waiting_on_task_ids,
        truncate_conversation=truncate,
        warnings=tuple(warnings),
    )


OPEN_TASK_STATUSES = frozenset({"pending", "running"})
FINISHED_TASK_STATUSES = frozenset({"completed", "failed"})


@dataclass(frozen=True)
class Resumption:
    """Seed 3.4 steps 5-6 decided: the state to resume in, the waits still open, and the tasks that
    finished while the supervisor was away."""

    state: str
    open_waits: list[UUID]
    finished: list[UUID]


def resume(plan: RestorePlan, *, questions_pending: bool, task_status: Mapping[UUID, str]) -> Resumption:
    """Pending questions put the supervisor back to waiting for the owner; open tasks it waited on, to
    waiting for them; a supervisor that was interrupted (or still initializing) with a state to go on
    from resumes working. A fresh start stays ``initializing``."""
    open_waits = [t for t in plan.waiting_on_task_ids if task_status.get(t) in OPEN_TASK_STATUSES]
    finished = [t for t in plan.spawned_task_ids if task_status.get(t) in FINISHED_TASK_STATUSES]
    state = plan.state
    if questions_pending:
        state = SupervisorState.WAITING_FOR_USER.value
    elif open_waits:
        state = SupervisorState.WAITING_FOR_TASKS.value
    elif state in (SupervisorState.INTERRUPTED.value, SupervisorState.INITIALIZING.value) and (
        plan.mode is not RestoreMode.FRESH
    ):
        state = SupervisorState.WORKING.value
    return Resumption(state, open_waits, finished)


def restoration_context(
    *,
    mode: str,
    phase: str,
    state: str,
    conversation_length: int,
    redelivered_questions: list[str],
    compacted: int = 0,
    answers: list[tuple[str, str]],
    waiting_on: list[str],
    finished_while_away: list[str],
    warnings: list[str],
) -> str:
    """Seed 3.4 step 7: what to tell the LLM when it resumes, in plain words."""
    how = {
        "clean": "You were shut down cleanly",
        "crash": "You stopped unexpectedly (your host crashed or lost contact)",
        "checkpoint": "Your last saved state was inconsistent; you are resuming from your last checkpoint",
        "fresh": "No saved state was found; you are starting this contract fresh",
    }[mode]
    lines = [f"{how}. The contract is in phase '{phase}'; your state was '{state}'."]
    if conversation_length:
        lines.append(f"Your conversation history ({conversation_length} messages) has been restored.")
    if compacted:
        lines.append(
            f"The earliest {compacted} messages of your conversation were compacted away to bound the stored "
            "state; the newest ones are kept."
        )
    for q in redelivered_questions:
        lines.append(f"Still waiting for the owner's answer to: {q}")
    for q, a in answers:
        lines.append(f"The owner answered '{q}': {a}")
    if waiting_on:
        lines.append(f"You are waiting on {len(waiting_on)} task(s): {', '.join(waiting_on)}.")
    if finished_while_away:
        lines.append(f"Finished while you were away: {', '.join(finished_while_away)}.")
    lines.extend(f"Note: {w}" for w in warnings)
    lines.append("Continue from here.")
    return "\n".join(lines)


# --- the size of the stored conversation (issue 13) -----------------------------------------------------

# The default cap on a supervisor's stored conversation ([contracts] supervisor_conversation_max_bytes),
# and how much of it one answer carries (GET …/state and restore page the rest with ``after_seq``): with
# the pending questions and the checkpoint, an answer stays under 2 MB, far below Lambda's 6 MB.
DEFAULT_CONVERSATION_MAX_BYTES = 2 * 1024 * 1024
CONVERSATION_PAGE_BYTES = 1024 * 1024

# A stored JSON value as PostgreSQL's text of it (``jsonb::text``): valid JSON, passed on unparsed.
JsonText = NewType("JsonText", str)


@dataclass(frozen=True)
class Compaction:
    start: int  # the first seq kept
    kept_bytes: int


def compaction(sizes: list[tuple[int, int]], max_bytes: int) -> Compaction | None:
    """Which of the oldest messages to drop when the stored conversation (``sizes``: each kept
    message's seq and size, oldest first) is over ``max_bytes``: enough that three quarters of the cap
    remain, so a supervisor that keeps talking compacts once in a while, not at every save. The newest
    message is always kept. None when within the cap."""
    total = sum(size for _, size in sizes)
    if total <= max_bytes or not sizes:
        return None
    target = max_bytes * 3 // 4
    kept = total
    for i, (_, size) in enumerate(sizes[:-1]):
        if kept <= target:
            return Compaction(sizes[i][0], kept)
        kept -= size
    return Compaction(sizes[-1][0], kept)
