"""LangGraph checkpoints stored for their owner (issue 18): the records that travel between the layers,
the bounds every request is held to, and the pure rules (sizes, page budgets) of
``services/checkpoints.py``.

The server never reads a checkpoint: the client's serde turned it into ``(type, bytes)`` and gets the
same pair back. What the server knows of it is where it sits (thread, namespace, id, parent), its JSON
metadata (for the list's filter, and for ``delete_for_runs``: ``metadata.run_id``) and its size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# A thread id is the client's own string (LangGraph's ``configurable.thread_id``); a namespace names a
# subgraph path ("parent:<uuid>|child:<uuid>"), so it gets more room. Both are plain text without NUL.
MAX_THREAD_ID_CHARS = 512
MAX_NS_CHARS = 2048
MAX_CHECKPOINT_ID_CHARS = 128
MAX_TASK_ID_CHARS = 256
MAX_TASK_PATH_CHARS = 2048
MAX_CHANNEL_CHARS = 512
MAX_TYPE_CHARS = 64
# A checkpoint's metadata (step, source, parents, run_id and the config's plain values).
MAX_METADATA_BYTES = 64 * 1024
# A list filter is matched against that metadata.
MAX_FILTER_BYTES = 16 * 1024
MAX_WRITES_PER_REQUEST = 1000
MAX_IDS_PER_REQUEST = 1000  # run ids of delete_for_runs, thread ids of prune
MAX_PAGE_ITEMS = 100
MAX_INTERRUPT_ID_CHARS = 128  # LangGraph's are 32 hex digits
MAX_QUESTION_CHARS = 10_000  # as any question (POST .../questions)
MAX_ANSWER_CHARS = 100_000  # as any answer (POST .../questions/{id}/answer)
# The default cap on a checkpoint with all its pending writes (decoded bytes). Base64 in JSON makes it
# about 5.6 MB on the wire: under Lambda's 6 MB request and response payloads.
DEFAULT_MAX_CHECKPOINT_BYTES = 4 * 1024 * 1024


class PruneStrategy(StrEnum):
    KEEP_LATEST = "keep_latest"  # keep the newest checkpoint of each namespace (and its writes)
    DELETE = "delete"  # remove every checkpoint of the threads


@dataclass(frozen=True)
class CheckpointKey:
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str


@dataclass(frozen=True)
class PendingWrite:
    task_id: str
    channel: str
    type: str
    value: bytes
    task_path: str = ""
    idx: int = 0


@dataclass(frozen=True)
class CheckpointPut:
    """One ``put``: the checkpoint as the client's serde wrote it."""

    key: CheckpointKey
    parent_checkpoint_id: str | None
    type: str
    checkpoint: bytes
    metadata: dict[str, Any]
    metadata_bytes: int  # its size as compact JSON (measured where it came in)


@dataclass(frozen=True)
class StoredCheckpoint:
    key: CheckpointKey
    parent_checkpoint_id: str | None
    type: str
    checkpoint: bytes
    metadata: dict[str, Any]
    pending_writes: list[PendingWrite] = field(default_factory=list)
    # the owner questions its interrupts were asked as (a bound thread's), with any answers
    interrupts: list[InterruptQuestion] = field(default_factory=list)


@dataclass(frozen=True)
class InterruptAsk:
    """An interrupt of a bound thread's INTERRUPT write, as the saver sends it: LangGraph's id and the
    question text the saver made of its value (the server never decodes the serde's bytes)."""

    interrupt_id: str
    question: str


@dataclass(frozen=True)
class InterruptQuestion:
    """The question an interrupt was asked as, and its answer once the owner gave one."""

    interrupt_id: str
    task_id: str
    question_id: str
    status: str
    answer: str | None


@dataclass(frozen=True)
class ListQuery:
    """``list``'s filters; None: not filtered on."""

    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    before: str | None = None  # only checkpoints whose id sorts before this one
    metadata: dict[str, Any] | None = None  # the metadata contains this (JSON containment)


@dataclass(frozen=True)
class Binding:
    """A thread bound to a contract: the saver is the contract's supervisor, as ``generation``."""

    contract_id: str
    supervisor_task_id: str
    generation: int
    started: bool  # True: the contract had no supervisor, one was started for the saver


def too_large(size: int, cap: int) -> bool:
    return size > cap


def page_budget(sizes: list[int], limit: int, budget: int) -> int:
    """How many of the rows (their stored sizes, in list order) go on one page: at most ``limit``, and
    no more than fit in ``budget`` bytes, but always at least one, so a page always moves the list on
    (a single checkpoint is within the cap, and the cap is the budget)."""
    total = 0
    for n, size in enumerate(sizes[:limit]):
        total += size
        if total > budget and n > 0:
            return n
    return min(len(sizes), limit)
