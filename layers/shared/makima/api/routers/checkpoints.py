"""LangGraph checkpoints (issue 18): the storage behind ``makima.integrations.langgraph``'s savers, for
the token's owner. Thread ids and namespaces are the client's arbitrary strings, so they travel in the
body or the query, never in the path; checkpoints and writes travel as base64 (``type`` names the
client serde's encoding). Its own Lambda (``functions/checkpoints``): the bodies are megabytes, not
the other routes' 256 KiB (``[checkpoints] max_checkpoint_bytes``)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from makima.api.deps import DB, Caller, Config, Policy
from makima.api.json_bounds import bounded
from makima.api.paging import next_cursor
from makima.api.routers._common import PREFIX, make_router, raises
from makima.api.schemas import TEXT, Body
from makima.domain.bounds import INT4_MAX
from makima.domain.checkpoints import (
    MAX_ANSWER_CHARS,
    MAX_CHANNEL_CHARS,
    MAX_CHECKPOINT_ID_CHARS,
    MAX_FILTER_BYTES,
    MAX_IDS_PER_REQUEST,
    MAX_INTERRUPT_ID_CHARS,
    MAX_METADATA_BYTES,
    MAX_NS_CHARS,
    MAX_PAGE_ITEMS,
    MAX_QUESTION_CHARS,
    MAX_TASK_ID_CHARS,
    MAX_TASK_PATH_CHARS,
    MAX_THREAD_ID_CHARS,
    MAX_TYPE_CHARS,
    MAX_WRITES_PER_REQUEST,
    CheckpointKey,
    CheckpointPut,
    InterruptAsk,
    ListQuery,
    PendingWrite,
    PruneStrategy,
    StoredCheckpoint,
)
from makima.domain.paging import CURSOR_PATTERN, MAX_CURSOR_CHARS
from makima.domain.strict import NO_BOOL
from makima.errors import (
    Conflict,
    ContractNotFound,
    Inconsistent,
    InvalidCursor,
    InvalidTransition,
    NotFound,
    OutOfBounds,
    SupervisorNotFound,
)
from makima.services import checkpoints as svc

CHECKPOINTS_PATH = f"{PREFIX}/checkpoints"
router = make_router("checkpoints")


# Standard base64 with its padding, as the document states it. ``b64decode(validate=True)`` (strict
# mode) accepts exactly the strings that match it, so validation decodes without running the pattern.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _decode(value: Any) -> bytes:
    """Standard base64 to bytes; anything else (not a string, not base64) is a 422."""
    if not isinstance(value, str):
        raise ValueError("a base64 string is expected")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not standard base64 (with its padding)") from None


Base64 = Annotated[
    bytes,
    BeforeValidator(_decode),
    WithJsonSchema(
        {"type": "string", "pattern": BASE64_PATTERN, "contentEncoding": "base64", "description": "Standard base64."}
    ),
]
ThreadId = Annotated[str, Field(min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=TEXT)]
Namespace = Annotated[str, Field(max_length=MAX_NS_CHARS, pattern=TEXT)]
CheckpointId = Annotated[str, Field(min_length=1, max_length=MAX_CHECKPOINT_ID_CHARS, pattern=TEXT)]
TypeName = Annotated[str, Field(min_length=1, max_length=MAX_TYPE_CHARS, pattern=TEXT)]
Metadata = Annotated[dict[str, Any], bounded(MAX_METADATA_BYTES)]
Generation = Annotated[int, Field(ge=1, le=INT4_MAX), NO_BOOL]


class Supervised(Body):
    """A write of a thread bound to a contract: the writer is its supervisor, as ``generation``."""

    contract_id: UUID | None = Field(
        default=None, description="The contract whose supervisor the writer is (the config's contract_id)."
    )
    generation: Generation | None = Field(
        default=None, description="The generation POST /checkpoints/bind gave; required with contract_id."
    )

    def supervision(self) -> svc.Supervision | None:
        """The binding; ``Inconsistent`` for one of the two without the other (a rule between fields,
        which the schema does not state)."""
        if self.contract_id is None and self.generation is None:
            return None
        if self.contract_id is None or self.generation is None:
            raise Inconsistent(
                "contract_id and generation go together",
                {"contract_id": str(self.contract_id) if self.contract_id else None, "generation": self.generation},
            )
        return svc.Supervision(self.contract_id, self.generation)


class CheckpointIn(Supervised):
    thread_id: ThreadId
    checkpoint_ns: Namespace = ""
    checkpoint_id: CheckpointId
    parent_checkpoint_id: CheckpointId | None = None
    type: TypeName = Field(description="The serde's type tag of the checkpoint bytes (e.g. msgpack).")
    checkpoint: Base64 = Field(description="The serialised checkpoint, standard base64.")
    metadata: Metadata = Field(default_factory=dict)


class WriteIn(Body):
    idx: Annotated[int, Field(ge=-INT4_MAX, le=INT4_MAX), NO_BOOL] = Field(
        description="Position in the task's writes; LangGraph's special writes have fixed negative ones."
    )
    channel: Annotated[str, Field(min_length=1, max_length=MAX_CHANNEL_CHARS, pattern=TEXT)]
    type: TypeName
    value: Base64


class InterruptIn(Body):
    """One interrupt of the INTERRUPT write, as the saver read it (the server never decodes the bytes)."""

    interrupt_id: Annotated[str, Field(min_length=1, max_length=MAX_INTERRUPT_ID_CHARS, pattern=TEXT)] = Field(
        description="LangGraph's Interrupt.id."
    )
    question: Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=TEXT)] = Field(
        description="The question the owner is asked: the interrupt's value as text."
    )


class WritesIn(Supervised):
    thread_id: ThreadId
    checkpoint_ns: Namespace = ""
    checkpoint_id: CheckpointId
    task_id: Annotated[str, Field(min_length=1, max_length=MAX_TASK_ID_CHARS, pattern=TEXT)]
    task_path: Annotated[str, Field(max_length=MAX_TASK_PATH_CHARS, pattern=TEXT)] = ""
    writes: list[WriteIn] = Field(min_length=1, max_length=MAX_WRITES_PER_REQUEST)
    interrupts: list[InterruptIn] = Field(
        default_factory=list,
        max_length=MAX_WRITES_PER_REQUEST,
        description="A bound thread's interrupts (of its __interrupt__ write): each is asked once as a "
        "question of the contract. Ignored without contract_id.",
    )
    resumed: list[Annotated[str, Field(min_length=1, max_length=MAX_ANSWER_CHARS, pattern=TEXT)]] = Field(
        default_factory=list,
        max_length=MAX_WRITES_PER_REQUEST,
        description="A bound thread's task resumed by the graph's own code: the values its interrupt() calls "
        "returned, as text, in order (its __resume__ write). A question still pending for the i-th interrupt "
        "is answered with the i-th. Ignored without contract_id.",
    )


class SearchIn(Body):
    """``list``'s filters (each optional) and the page to read."""

    thread_id: ThreadId | None = None
    checkpoint_ns: Namespace | None = Field(default=None, description="Omitted: every namespace.")
    checkpoint_id: CheckpointId | None = None
    before: CheckpointId | None = Field(default=None, description="Only checkpoints older than this id.")
    filter: Annotated[dict[str, Any], bounded(MAX_FILTER_BYTES)] | None = Field(
        default=None, description="Checkpoints whose metadata contains this (JSON containment)."
    )
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_ITEMS), NO_BOOL] = MAX_PAGE_ITEMS
    cursor: Annotated[str, Field(min_length=1, max_length=MAX_CURSOR_CHARS, pattern=CURSOR_PATTERN)] | None = None


class RunIdsIn(Body):
    run_ids: list[Annotated[str, Field(min_length=1, max_length=MAX_TASK_ID_CHARS, pattern=TEXT)]] = Field(
        max_length=MAX_IDS_PER_REQUEST
    )


class CopyIn(Body):
    source_thread_id: ThreadId
    target_thread_id: ThreadId


class PruneIn(Body):
    thread_ids: list[ThreadId] = Field(max_length=MAX_IDS_PER_REQUEST)
    strategy: PruneStrategy = PruneStrategy.KEEP_LATEST


class BindIn(Body):
    contract_id: UUID


class StoredOut(BaseModel):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str


class WritesStored(BaseModel):
    stored: int


class Counted(BaseModel):
    count: int = Field(description="How many checkpoints were deleted (or copied).")


class WriteOut(BaseModel):
    task_id: str
    task_path: str
    idx: int
    channel: str
    type: str
    value: str = Field(description="Base64.")


class InterruptQuestionOut(BaseModel):
    interrupt_id: str
    task_id: str
    question_id: UUID
    status: str = Field(description="pending or answered.")
    answer: str | None


class CheckpointOut(BaseModel):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    type: str
    checkpoint: str = Field(description="Base64.")
    metadata: dict[str, Any]
    pending_writes: list[WriteOut] = Field(description="In LangGraph's replay order (task_path, task_id, idx).")
    interrupts: list[InterruptQuestionOut] = Field(
        default_factory=list,
        description="The questions this checkpoint's interrupts were asked as (a bound thread's), with their "
        "answers: the saver resumes the interrupted tasks with them.",
    )


class CheckpointPage(BaseModel):
    checkpoints: list[CheckpointOut]
    next_cursor: str | None = next_cursor()


class BindingOut(BaseModel):
    contract_id: UUID
    supervisor_task_id: UUID
    generation: int = Field(description="Send it with every write of the thread.")
    started: bool = Field(description="True: the contract had no live supervisor; one was started.")


def _enc(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _out(c: StoredCheckpoint) -> CheckpointOut:
    return CheckpointOut.model_construct(
        thread_id=c.key.thread_id,
        checkpoint_ns=c.key.checkpoint_ns,
        checkpoint_id=c.key.checkpoint_id,
        parent_checkpoint_id=c.parent_checkpoint_id,
        type=c.type,
        checkpoint=_enc(c.checkpoint),
        metadata=c.metadata,
        pending_writes=[
            WriteOut.model_construct(
                task_id=w.task_id, task_path=w.task_path, idx=w.idx, channel=w.channel, type=w.type, value=_enc(w.value)
            )
            for w in c.pending_writes
        ],
        interrupts=[
            InterruptQuestionOut.model_construct(
                interrupt_id=i.interrupt_id,
                task_id=i.task_id,
                question_id=UUID(i.question_id),
                status=i.status,
                answer=i.answer,
            )
            for i in c.interrupts
        ],
    )


def _limits(settings: Config) -> svc.Limits:
    return svc.Limits(max_checkpoint_bytes=settings.checkpoints.max_checkpoint_bytes)


# A bound write's refusals, and free-form metadata past its bounds (depth, size, NUL: ``OutOfBounds``).
_BOUND = (ContractNotFound, SupervisorNotFound, Conflict, Inconsistent, OutOfBounds)


@router.put("/checkpoints", response_model=StoredOut, responses=raises(*_BOUND))
def put_checkpoint(body: CheckpointIn, db: DB, caller: Caller, settings: Config) -> StoredOut:
    """Store a checkpoint (the same id again replaces it). With ``contract_id``, also the contract's
    supervisor heartbeat (409 ``CONFLICT``, nothing stored, when ``generation`` was superseded)."""
    key = CheckpointKey(body.thread_id, body.checkpoint_ns, body.checkpoint_id)
    metadata_bytes = len(json.dumps(body.metadata, ensure_ascii=False, separators=(",", ":")).encode())
    put = CheckpointPut(key, body.parent_checkpoint_id, body.type, body.checkpoint, body.metadata, metadata_bytes)
    svc.put_checkpoint(db, caller, put, limits=_limits(settings), supervision=body.supervision())
    return StoredOut(thread_id=key.thread_id, checkpoint_ns=key.checkpoint_ns, checkpoint_id=key.checkpoint_id)


@router.put("/checkpoints/writes", response_model=WritesStored, responses=raises(*_BOUND, InvalidTransition))
def put_writes(body: WritesIn, db: DB, caller: Caller, settings: Config, policy: Policy) -> WritesStored:
    """Store a task's pending writes for a checkpoint; one (task_id, idx) is stored once (a repeat
    replaces it). A bound thread's ``interrupts`` are asked as the contract's questions, each once."""
    key = CheckpointKey(body.thread_id, body.checkpoint_ns, body.checkpoint_id)
    writes = [
        PendingWrite(
            task_id=body.task_id, channel=w.channel, type=w.type, value=w.value, task_path=body.task_path, idx=w.idx
        )
        for w in body.writes
    ]
    n = svc.put_writes(
        db,
        caller,
        key,
        writes,
        limits=_limits(settings),
        supervision=body.supervision(),
        interrupts=[InterruptAsk(i.interrupt_id, i.question) for i in body.interrupts],
        resumed=body.resumed,
        policy=policy,
    )
    return WritesStored(stored=n)


@router.get("/checkpoints/tuple", response_model=CheckpointOut, responses=raises(NotFound))
def get_tuple(
    db: DB,
    caller: Caller,
    thread_id: Annotated[str, Query(min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=TEXT)],
    checkpoint_ns: Annotated[str, Query(max_length=MAX_NS_CHARS, pattern=TEXT)] = "",
    checkpoint_id: Annotated[
        str | None, Query(min_length=1, max_length=MAX_CHECKPOINT_ID_CHARS, pattern=TEXT, description="Omit: newest.")
    ] = None,
) -> CheckpointOut:
    """One checkpoint with its pending writes: ``checkpoint_id``'s, or the namespace's newest. 404
    ``NOT_FOUND`` when there is none."""
    return _out(svc.get_tuple(db, caller, thread_id, checkpoint_ns, checkpoint_id))


@router.post("/checkpoints/search", response_model=CheckpointPage, responses=raises(InvalidCursor, OutOfBounds))
def search(body: SearchIn, db: DB, caller: Caller, settings: Config) -> CheckpointPage:
    """A page of checkpoints, newest first: at most ``limit``, and no more than fit in
    ``max_checkpoint_bytes`` (at least one). A read: it changes nothing, and may be resent."""
    query = ListQuery(
        thread_id=body.thread_id,
        checkpoint_ns=body.checkpoint_ns,
        checkpoint_id=body.checkpoint_id,
        before=body.before,
        metadata=body.filter,
    )
    page = svc.list_checkpoints(db, caller, query, limit=body.limit, cursor=body.cursor, limits=_limits(settings))
    return CheckpointPage.model_construct(checkpoints=[_out(c) for c in page.items], next_cursor=page.next_cursor)


@router.delete("/checkpoints", response_model=Counted)
def delete_thread(
    db: DB,
    caller: Caller,
    thread_id: Annotated[str, Query(min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=TEXT)],
) -> Counted:
    """Every checkpoint and pending write of the thread (all namespaces); none is no error."""
    return Counted(count=svc.delete_thread(db, caller, thread_id))


@router.post("/checkpoints/delete-runs", response_model=Counted)
def delete_for_runs(body: RunIdsIn, db: DB, caller: Caller) -> Counted:
    """The checkpoints (and their writes) whose ``metadata.run_id`` is one of ``run_ids``."""
    return Counted(count=svc.delete_for_runs(db, caller, body.run_ids))


@router.post("/checkpoints/copy", response_model=Counted)
def copy_thread(body: CopyIn, db: DB, caller: Caller) -> Counted:
    """Every checkpoint and write of the source thread under the target thread too (same ids)."""
    return Counted(count=svc.copy_thread(db, caller, body.source_thread_id, body.target_thread_id))


@router.post("/checkpoints/prune", response_model=Counted)
def prune(body: PruneIn, db: DB, caller: Caller) -> Counted:
    """``keep_latest``: all but each namespace's newest checkpoint (and their writes) go; ``delete``:
    all of them."""
    return Counted(count=svc.prune(db, caller, body.thread_ids, body.strategy))


@router.post(
    "/checkpoints/bind",
    response_model=BindingOut,
    responses=raises(ContractNotFound, SupervisorNotFound, InvalidTransition, Conflict),
)
def bind(body: BindIn, db: DB, caller: Caller) -> BindingOut:
    """Become the contract's supervisor: start one when it has no live supervisor, otherwise restore it
    under a new generation (the previous holder's writes are refused from now on)."""
    b = svc.bind(db, caller, body.contract_id)
    return BindingOut(
        contract_id=UUID(b.contract_id),
        supervisor_task_id=UUID(b.supervisor_task_id),
        generation=b.generation,
        started=b.started,
    )
