"""A daemon: a worker host that registers with the service, runs supervisors on threads, and sends one
batched heartbeat for all of them (``POST /supervisors/heartbeats``) plus its own daemon heartbeat with
the worktrees it holds (``POST /daemons/{id}/heartbeat``), removing those the service asks back.

With an ``adopt`` factory it also takes over supervisors another daemon may not run any more: after
each heartbeat round it lists the adoptable tasks (``GET /tasks/reassignable``: their daemon is dead,
their supervisor stopped cleanly, or it is dead and its owner asked for a restart), claims the
supervisors' (``POST /tasks/{id}/claim``: exactly one claimant wins) and hosts what the factory makes
of each (a supervisor that restores itself on this daemon)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from makima.client.api import JSON, ApiError, MakimaApi
from makima.client.heartbeat import DEFAULT_JITTER, HeartbeatAnswer, HeartbeatLoop, interval_of
from makima.client.session import SupervisorSession

log = logging.getLogger("makima.client.daemon")

MAX_BATCH = 500  # the service's limit per batch


class Hosted(Protocol):
    """What a daemon runs: a supervisor with a session (None until it started or restored)."""

    contract_id: str

    @property
    def session(self) -> SupervisorSession | None: ...

    def run(self) -> str: ...

    def crash(self) -> None: ...

    def stop(self) -> None: ...


# Makes the supervisor to host for an adoptable contract (it restores itself on this daemon), or None
# to leave that contract alone.
Adopt = Callable[[str], Hosted | None]


class Daemon:
    """``start()`` registers (the same name revives a daemon) and starts the heartbeat loop;
    ``host(supervisor)`` runs one on its own thread; ``stop()`` stops them cleanly, ``crash()`` as a
    crash would (no goodbye saves, heartbeats stop)."""

    def __init__(
        self,
        api: MakimaApi,
        name: str,
        *,
        hostname: str | None = None,
        capacity: int = 100,
        heartbeat_interval: float | None = None,
        heartbeat_jitter: float = DEFAULT_JITTER,
        worktree_root: str = "makima-worktrees",
        on_outcome: Callable[[Hosted, str], None] | None = None,
        adopt: Adopt | None = None,
    ) -> None:
        self.api = api
        self.name = name
        self.hostname = hostname or socket.gethostname()
        self.capacity = capacity
        self.worktree_root = worktree_root.rstrip("/")
        self.on_outcome = on_outcome
        self.adopt = adopt
        self.adopted: list[str] = []  # contract ids taken over, in order
        self._ending = False  # stopping or crashing: adopt nothing more (its own would come back)
        self.id: str | None = None
        self.outcomes: dict[str, str] = {}  # contract id -> completed | crashed | superseded | stopped | failed
        self.removed_worktrees: list[str] = []
        self._worktrees: dict[str, JSON] = {}  # path -> report entry
        self._unlinked: set[str] = set()  # paths whose task the service does not know (any more)
        self._hosted: dict[str, tuple[Hosted, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._loop = HeartbeatLoop(
            self.beat, interval=heartbeat_interval, jitter=heartbeat_jitter, name=f"daemon-{name}"
        )

    def register(self) -> str:
        daemon = self.api.register_daemon(self.name, hostname=self.hostname, capacity=self.capacity)
        self.id = str(daemon["id"])
        self._loop.follow(interval_of(daemon))
        return self.id

    def start(self) -> Daemon:
        if self.id is None:
            self.register()
        self._loop.start()
        return self

    @property
    def heartbeats(self) -> HeartbeatLoop:
        return self._loop

    # --- supervisors -----------------------------------------------------------------------------------

    def host(self, supervisor: Hosted) -> threading.Thread:
        thread = threading.Thread(
            target=self._run, args=(supervisor,), name=f"supervisor-{supervisor.contract_id[:8]}", daemon=True
        )
        with self._lock:
            self._hosted[supervisor.contract_id] = (supervisor, thread)
        thread.start()
        return thread

    def _run(self, supervisor: Hosted) -> None:
        try:
            outcome = supervisor.run()
        except Exception:
            log.exception("supervisor of %s died", supervisor.contract_id)
            outcome = "failed"
        with self._lock:
            self.outcomes[supervisor.contract_id] = outcome
            self._hosted.pop(supervisor.contract_id, None)
        if self.on_outcome:
            self.on_outcome(supervisor, outcome)

    def hosted(self) -> list[Hosted]:
        with self._lock:
            return [s for s, _ in self._hosted.values()]

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every hosted supervisor to end; True when none is left."""
        with self._lock:
            threads = [t for _, t in self._hosted.values()]
        for t in threads:
            t.join(timeout)
        with self._lock:
            return not self._hosted

    # --- heartbeats ------------------------------------------------------------------------------------

    def beat(self) -> None:
        """One round: the supervisors' batch, then the daemon's own heartbeat."""
        sessions = [
            s
            for s in (h.session for h in self.hosted())
            # one beating on its own is skipped; one stopped cleanly sends nothing more
            if s is not None and not s.superseded and not s.stopped and s.heartbeats is None
        ]
        # Each message is taken under its session's lock, and a session that saved at shutdown meanwhile
        # (the filter above ran before its save answered) gives none: a heartbeat stamped after that save
        # would bring the stopped supervisor back to life.
        beating = [(s, m) for s in sessions if (m := s.live_heartbeat_message()) is not None]
        for start in range(0, len(beating), MAX_BATCH):
            chunk = [s for s, _ in beating[start : start + MAX_BATCH]]
            messages = [m for _, m in beating[start : start + MAX_BATCH]]
            answer = self.api.heartbeat_batch(messages, daemon_id=self.id)
            self._loop.follow(interval_of(answer))
            for session, result in zip(chunk, answer["results"], strict=True):
                try:
                    session.handle_answer(HeartbeatAnswer.of(result))
                except ApiError as exc:
                    log.warning("acting on the heartbeat answer of %s failed: %s", session.contract_id, exc)
        self._daemon_heartbeat()
        self.adopt_tasks()

    def adopt_tasks(self) -> list[str]:
        """Take over the adoptable supervisors this daemon has room for; returns their contract ids.
        A task another daemon claimed first is skipped (409)."""
        if self.adopt is None or self.id is None or self._ending:
            return []
        with self._lock:
            room = self.capacity - len(self._hosted)
            hosted = set(self._hosted)
        if room <= 0:
            return []
        taken: list[str] = []
        for task in self.api.reassignable_tasks(limit=min(100, room * 4)):
            contract_id = str(task["contract_id"])
            if not task.get("is_supervisor") or contract_id in hosted:
                continue
            supervisor = self.adopt(contract_id)
            if supervisor is None:
                continue
            try:
                self.api.claim_task(str(task["id"]), self.id)
            except ApiError as exc:
                if exc.code == "CONFLICT":  # claimed by another daemon meanwhile
                    continue
                raise
            log.info("daemon %s adopts the supervisor of %s", self.name, contract_id)
            self.host(supervisor)
            hosted.add(contract_id)
            taken.append(contract_id)
            if len(taken) >= room or self._ending:
                break
        self.adopted.extend(taken)
        return taken

    def worktrees(self) -> list[JSON]:
        """What this host holds: a (notional) worktree per supervisor it ran, kept after the supervisor
        ends, until the service asks for it back (its contract or task finished)."""
        with self._lock:
            for s in (h.session for h, _ in self._hosted.values()):
                if s is not None and not s.superseded:
                    path = f"{self.worktree_root}/{s.contract_id}"
                    branch = f"makima/{s.contract_id[:8]}"
                    task_id = None if path in self._unlinked else s.task_id
                    self._worktrees[path] = {"path": path, "branch": branch, "task_id": task_id}
            return list(self._worktrees.values())

    def _unlink(self, exc: ApiError) -> bool:
        """After a heartbeat refused for a worktree's task (404 naming its ``path``: the task is not one
        of this daemon's owner, e.g. its contract was deleted), hold that worktree as one of no task,
        which the service asks back. False when the error is something else, or that path is unlinked
        already."""
        path = exc.details.get("path")
        if exc.status != 404 or "task_id" not in exc.details or not isinstance(path, str):
            return False
        with self._lock:
            if path in self._unlinked:
                return False
            self._unlinked.add(path)
            if path in self._worktrees:
                self._worktrees[path] = {**self._worktrees[path], "task_id": None}
        log.warning("worktree %s: its task is unknown to the service; reporting it without one", path)
        return True

    def _daemon_heartbeat(self) -> None:
        if self.id is None:
            return
        while True:
            try:
                answer = self.api.daemon_heartbeat(self.id, self.worktrees())
                break
            except ApiError as exc:
                if not self._unlink(exc):  # each retry unlinks one more path: the loop ends
                    raise
        self._loop.follow(interval_of(answer))
        paths = [str(w["path"]) for w in answer.get("remove_worktrees", [])]
        if paths:
            # A real daemon deletes the directories here; these are notional.
            self.api.worktrees_removed(self.id, paths)
            with self._lock:
                for path in paths:
                    self._worktrees.pop(path, None)
                    self._unlinked.discard(path)
                self.removed_worktrees.extend(paths)

    # --- ending ----------------------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every supervisor cleanly (each saves a ``shutdown`` state), then the heartbeats. The
        service then holds them stopped on purpose: never swept as dead, restored ``clean``, and
        adoptable by another daemon."""
        self._ending = True
        for s in self.hosted():
            s.stop()
        self.join(timeout)
        self._loop.stop()

    def crash(self, timeout: float = 30.0) -> None:
        """As if the host died: the supervisors stop where they are, nothing more is sent."""
        self._ending = True
        self._loop.stop()
        for s in self.hosted():
            s.crash()
        self.join(timeout)
