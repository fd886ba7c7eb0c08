"""One supervisor's side of the protocol (seed 3.2-3.4): its identity (task id, generation), the state
it persists at save points with an increasing ``seq``, its heartbeat message and what it does with the
answer, and the restoration handshake.

A session is what an LLM-driven supervisor (or the scripted reference supervisor) holds in memory;
everything in it is either on the server already or sent with the next save. Thread-safe: a heartbeat
thread may save (on ``sync_requested``) while the supervisor's own thread works.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from makima.client.api import JSON, MakimaApi, StaleSave, Superseded
from makima.client.heartbeat import DEFAULT_JITTER, HeartbeatAnswer, HeartbeatLoop, interval_of
from makima.domain.supervisors import SavePoint, SupervisorState

log = logging.getLogger("makima.client.session")

MAX_ACTIVITY = 2000


@dataclass(frozen=True)
class Restored:
    """The answer of ``POST …/supervisor/restore``, as the restored supervisor uses it."""

    mode: str  # clean | crash | checkpoint | fresh
    task_id: str
    generation: int
    next_seq: int
    state: str
    phase: str
    conversation_history: list[dict[str, Any]]  # every kept message (the SDK followed the cursor)
    pending_questions: list[dict[str, Any]]
    answered_questions: list[dict[str, Any]]
    waiting_on_task_ids: list[str]
    finished_task_ids: list[str]
    spawned_task_ids: list[str]
    restoration_context: str
    warnings: list[str] = field(default_factory=list)
    heartbeat_interval: float | None = None  # the service's heartbeat interval
    conversation_start: int = 0  # the seq of the first kept message: the ones before were compacted away

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Restored:
        return cls(
            mode=str(body["mode"]),
            task_id=str(body["task_id"]),
            generation=int(body["generation"]),
            next_seq=int(body["next_seq"]),
            state=str(body["state"]),
            phase=str(body["phase"]),
            conversation_history=[m if isinstance(m, dict) else {"content": m} for m in body["conversation_history"]],
            pending_questions=list(body["pending_questions"]),
            answered_questions=list(body["answered_questions"]),
            waiting_on_task_ids=[str(t) for t in body["waiting_on_task_ids"]],
            finished_task_ids=[str(t) for t in body["finished_task_ids"]],
            spawned_task_ids=[str(t) for t in body["spawned_task_ids"]],
            restoration_context=str(body["restoration_context"]),
            warnings=list(body.get("warnings") or []),
            heartbeat_interval=interval_of(body),
            conversation_start=int(body.get("conversation_start") or 0),
        )


class SupervisorSession:
    """Create with ``start`` (a new supervisor for a contract) or ``restore`` (take one over after a
    crash, a restart, or from another daemon). Then: change ``state``/``phase``/``activity``, ``say``
    messages, ``save`` at each save point, and send ``heartbeat_message()`` (a ``HeartbeatLoop`` via
    ``start_heartbeats``, or a daemon's batch) and feed the answers to ``handle_answer``.

    On an answer: ``sync_requested`` saves the whole state at once; ``restart_requested`` calls
    ``on_restart`` (default: remember it in ``restart_requested`` for the supervisor's loop);
    ``superseded`` marks the session superseded, stops its heartbeats and calls ``on_superseded``:
    every later save raises ``Superseded``."""

    def __init__(self, api: MakimaApi, contract_id: str, task_id: str, *, generation: int, next_seq: int) -> None:
        self.api = api
        self.contract_id = contract_id
        self.task_id = task_id
        self.generation = generation
        self.seq = next_seq - 1  # the last seq used
        self.state: str = SupervisorState.INITIALIZING.value
        self.phase: str = ""
        self.activity = ""
        self.progress = 0
        self.conversation: list[dict[str, Any]] = []
        # The seq of conversation[0]: a restored supervisor holds the kept messages only (the service
        # compacted the older ones away), so seqs and offsets stay absolute.
        self.conversation_start = 0
        self.saved_length = 0  # how much of the conversation the server has (its conversation_length)
        self.pending_questions: list[dict[str, Any]] = []
        self.spawned_task_ids: list[str] = []
        self.waiting_on_task_ids: list[str] = []
        self.error: str | None = None
        self.superseded = False
        self.stopped = False  # saved at shutdown: it sends no more heartbeats (one would revive it)
        self.heartbeat_interval: float | None = None  # the service's, from its last answer
        self.restart_requested = False
        self.restored: Restored | None = None
        self.saves = 0
        self.on_restart: Callable[[SupervisorSession], None] | None = None
        self.on_superseded: Callable[[SupervisorSession], None] | None = None
        self.on_sync: Callable[[SupervisorSession], None] | None = None
        self.heartbeats: HeartbeatLoop | None = None
        self._lock = threading.RLock()

    # --- the two ways in -----------------------------------------------------------------------------

    @classmethod
    def start(
        cls, api: MakimaApi, contract_id: str, *, daemon_id: str | None = None, name: str = "supervisor"
    ) -> SupervisorSession:
        """``POST …/supervisor``: a new supervisor task (the contract becomes active), generation 1."""
        started = api.start_supervisor(contract_id, daemon_id=daemon_id, name=name)
        sup = started["supervisor"]
        session = cls(api, contract_id, str(sup["task_id"]), generation=int(sup["generation"]), next_seq=1)
        session.phase = str(sup["phase"] or started["contract"]["phase"])
        session.state = str(sup["state"])
        session.heartbeat_interval = interval_of(started)
        return session

    @classmethod
    def restore(cls, api: MakimaApi, contract_id: str, *, daemon_id: str | None = None) -> SupervisorSession:
        """The restoration handshake: ``POST …/supervisor/restore`` moves the supervisor to this daemon
        under ``generation + 1`` (its previous incarnation is refused from now on); the session adopts
        the generation, the next seq, the state, the phase and the whole conversation. ``restored``
        keeps the rest (questions re-delivered, answers not yet acknowledged, tasks, the context)."""
        r = Restored.of(api.restore(contract_id, daemon_id=daemon_id))
        session = cls(api, contract_id, r.task_id, generation=r.generation, next_seq=r.next_seq)
        session.state = r.state
        session.phase = r.phase
        session.conversation = list(r.conversation_history)
        session.conversation_start = r.conversation_start
        session.saved_length = r.conversation_start + len(r.conversation_history)
        session.pending_questions = list(r.pending_questions)
        session.spawned_task_ids = list(r.spawned_task_ids)
        session.waiting_on_task_ids = list(r.waiting_on_task_ids)
        session.heartbeat_interval = r.heartbeat_interval
        session.restored = r
        return session

    # --- state -----------------------------------------------------------------------------------------

    def update(
        self,
        *,
        state: SupervisorState | str | None = None,
        phase: str | None = None,
        activity: str | None = None,
        progress: int | None = None,
    ) -> None:
        with self._lock:
            if state is not None:
                self.state = SupervisorState(state).value
            if phase is not None:
                self.phase = phase
            if activity is not None:
                self.activity = activity[:MAX_ACTIVITY]
            if progress is not None:
                self.progress = max(0, min(100, int(progress)))

    def say(self, content: str, *, role: str = "assistant", key: str | None = None, **extra: Any) -> bool:
        """Append a message to the conversation (sent with the next save). With ``key``, a message of
        that key already in the conversation (e.g. restored) is not appended twice: False."""
        with self._lock:
            if key is not None and self.has_key(key):
                return False
            message: dict[str, Any] = {"role": role, "content": content, **extra}
            if key is not None:
                message["key"] = key
            self.conversation.append(message)
            return True

    def has_key(self, key: str) -> bool:
        with self._lock:
            return any(m.get("key") == key for m in self.conversation)

    def track_task(self, task_id: str, *, waiting: bool = True) -> None:
        with self._lock:
            if task_id not in self.spawned_task_ids:
                self.spawned_task_ids.append(task_id)
            if waiting and task_id not in self.waiting_on_task_ids:
                self.waiting_on_task_ids.append(task_id)

    def task_finished(self, task_id: str) -> None:
        with self._lock:
            if task_id in self.waiting_on_task_ids:
                self.waiting_on_task_ids.remove(task_id)

    def save(self, save_point: SavePoint | str, *, checkpoint: bool = False) -> JSON:
        """``PUT …/supervisor/state`` with the next seq and this generation, appending the messages the
        server does not have yet. Raises ``Superseded`` (and marks the session) when a newer generation
        exists, ``StaleSave`` for a seq the server already passed. A save whose answer was lost and that
        the server did apply (it reports this very seq) counts as done."""
        point = SavePoint(save_point)
        with self._lock:
            if self.superseded:
                raise Superseded(409, "CONFLICT", "this supervisor was superseded", {"reason": "superseded"})
            self.seq += 1
            seq = self.seq
            body = {
                "generation": self.generation,
                "seq": seq,
                "save_point": point.value,
                "state": self.state,
                "phase": self.phase,
                "current_activity": self.activity,
                "conversation_offset": self.saved_length,
                "conversation_append": self.conversation[self.saved_length - self.conversation_start :],
                "pending_questions": self.pending_questions,
                "spawned_task_ids": self.spawned_task_ids,
                "waiting_on_task_ids": self.waiting_on_task_ids,
                "error": self.error,
                "checkpoint": checkpoint,
            }
            try:
                saved = self.api.save_state(self.contract_id, body)
            except Superseded:
                self._mark_superseded()
                raise
            except StaleSave as exc:
                if exc.reason == "stale_sequence" and int(exc.details.get("save_seq", -1)) == seq:
                    saved = {"save_seq": seq, "generation": self.generation}  # our earlier attempt landed
                else:
                    raise
            self.saved_length = self.conversation_start + len(self.conversation)
            self.saves += 1
            # The service now holds it stopped on purpose (not swept, adoptable), until it saves again.
            self.stopped = point is SavePoint.SHUTDOWN
            return saved

    # --- heartbeats ------------------------------------------------------------------------------------

    def heartbeat_message(self) -> JSON:
        """The seed's heartbeat message, with ``contract_id`` (for batches) and the generation."""
        with self._lock:
            return {
                "task_id": self.task_id,
                "contract_id": self.contract_id,
                "state": self.state,
                "phase": self.phase,
                "current_activity": self.activity,
                "progress": self.progress,
                "pending_task_ids": list(self.waiting_on_task_ids),
                "timestamp": datetime.now(UTC).isoformat(),
                "generation": self.generation,
            }

    def live_heartbeat_message(self) -> JSON | None:
        """The heartbeat message, or None once this supervisor saved at shutdown or was superseded:
        decided under the same lock a save holds, so no heartbeat is stamped after a shutdown save (the
        service would take it as the supervisor coming back to life)."""
        with self._lock:
            if self.stopped or self.superseded:
                return None
            return self.heartbeat_message()

    def send_heartbeat(self) -> HeartbeatAnswer:
        """One heartbeat on ``POST …/supervisor/heartbeat``, its answer handled."""
        message = self.live_heartbeat_message()
        if message is None:
            reason = "superseded" if self.superseded else "stopped"
            return HeartbeatAnswer(self.task_id, False, reason, superseded=self.superseded)
        message.pop("contract_id")
        answer = HeartbeatAnswer.of(self.api.supervisor_heartbeat(self.contract_id, message))
        self.handle_answer(answer)
        return answer

    def handle_answer(self, answer: HeartbeatAnswer) -> None:
        if answer.heartbeat_interval is not None:
            self.heartbeat_interval = answer.heartbeat_interval
            if self.heartbeats is not None:
                self.heartbeats.follow(answer.heartbeat_interval)
        if answer.superseded:
            self._mark_superseded()
            return
        if answer.sync_requested:
            try:
                self.save(SavePoint.HEARTBEAT)
            except Superseded:
                return
            if self.on_sync:
                self.on_sync(self)
        if answer.restart_requested:
            with self._lock:
                self.restart_requested = True
            if self.on_restart:
                self.on_restart(self)

    def start_heartbeats(self, *, interval: float | None = None, jitter: float = DEFAULT_JITTER) -> HeartbeatLoop:
        """Beat on this session's own thread (a daemon hosting many batches them instead), at the
        service's interval (``interval``: at most this long between beats)."""
        loop = HeartbeatLoop(
            self.send_heartbeat, interval=interval, jitter=jitter, name=f"heartbeat-{self.contract_id[:8]}"
        )
        loop.follow(self.heartbeat_interval)
        self.heartbeats = loop
        return loop.start()

    def stop_heartbeats(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.stop()

    def _mark_superseded(self) -> None:
        with self._lock:
            if self.superseded:
                return
            self.superseded = True
        log.warning("supervisor of %s superseded (generation %d): stopping", self.contract_id, self.generation)
        if self.heartbeats is not None:
            self.heartbeats.stop()
        if self.on_superseded:
            self.on_superseded(self)

    # --- conveniences ----------------------------------------------------------------------------------

    def known_tasks(self) -> set[str]:
        with self._lock:
            return set(self.spawned_task_ids)

    def keys(self) -> Iterable[str]:
        with self._lock:
            return [str(m["key"]) for m in self.conversation if "key" in m]
