"""The scripted reference supervisor: no LLM, but every call a real one makes, so it drives real
contracts end to end (tests, demos, load).

For each phase of its contract it: says what it will do (a ``phase_change`` save), spawns its tasks
(``<phase>-step-<n>``, a ``task_spawn`` save each) and starts them, marks all deliverables but the last,
asks the owner a question if told to (``question_asked``) and waits for the answer, completes the tasks
and the last deliverable (an ``llm_response`` save each, with a message appended to the conversation),
then waits for the service to advance the phase (the gate is met); it stops when the contract is
completed.

Restartable: every step first looks at what the service says is done (the contract's phase and
deliverables, its tasks by name, its questions) and at the restored state (conversation, spawned and
waited-on tasks), and does only what is missing. A crash anywhere (even between a task being created
and the save recording it: the task is adopted by its name) loses nothing and repeats nothing.

Run one as a process (a daemon hosting one supervisor)::

    MAKIMA_TOKEN=... python -m makima.client.reference --api-url http://127.0.0.1:8000 \\
        --contract-id <id> [--restore] [--daemon-name host-a] [--ask-in-phase specify]

It prints one JSON line per event and exits 0 when the contract is completed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from makima.client.api import JSON, ApiError, ApiUnreachable, MakimaApi, StaleSave, Superseded
from makima.client.daemon import Daemon
from makima.client.heartbeat import DEFAULT_JITTER
from makima.client.session import SupervisorSession
from makima.domain.supervisors import SavePoint, SupervisorState

log = logging.getLogger("makima.client.reference")

OPEN_TASK = frozenset({"pending", "running"})
FINISHED_CONTRACT = frozenset({"completed", "failed", "archived"})
EventSink = Callable[[str, Mapping[str, Any]], None]


class SimulatedCrash(Exception):
    """Raised inside the supervisor's thread to stop it the way a crash would: no goodbye save."""


class _StopRequested(Exception):
    pass


class _RestartRequested(Exception):
    """Unwinds the current step; the main loop restarts (save, stop, restore) and looks again."""


@dataclass(frozen=True)
class ReferenceConfig:
    tasks_per_phase: int = 2
    step_delay: float = 0.2  # between actions, so that a human (or a test) can watch and interrupt
    poll_interval: float = 0.2
    heartbeat_interval: float | None = None  # None: the service's; else at most this long between beats
    heartbeat_jitter: float = DEFAULT_JITTER
    own_heartbeats: bool = True  # False when a daemon batches the heartbeats
    ask_in_phase: str | None = None  # ask the owner a question in this phase and wait for the answer
    question: str = "Which approach should I take?"
    advance_after: float = 3.0  # gate met this long without the service advancing: advance by hand
    max_consecutive_errors: int = 30


class ReferenceSupervisor:
    """One contract's scripted supervisor. ``run()`` (blocking; a daemon runs it on a thread) returns
    the outcome: ``completed``, ``failed``, ``crashed`` (``crash()`` or ``crash_when``), ``superseded``
    (restored elsewhere) or ``stopped`` (``stop()``: a clean shutdown save)."""

    def __init__(
        self,
        api: MakimaApi,
        contract_id: str,
        *,
        daemon_id: str | None = None,
        restore: bool = False,
        config: ReferenceConfig | None = None,
        on_event: EventSink | None = None,
        crash_when: Callable[[str], bool] | None = None,
    ) -> None:
        self.api = api
        self.contract_id = contract_id
        self.daemon_id = daemon_id
        self.restore_first = restore
        self.config = config or ReferenceConfig()
        self.on_event = on_event
        self.crash_when = crash_when
        self.outcome: str | None = None
        self.restores = 0
        self.points: list[str] = []
        self._session: SupervisorSession | None = None
        self._crash = threading.Event()
        self._stop = threading.Event()

    @property
    def session(self) -> SupervisorSession | None:
        return self._session

    def _s(self) -> SupervisorSession:
        assert self._session is not None
        return self._session

    def crash(self) -> None:
        self._crash.set()

    def stop(self) -> None:
        self._stop.set()

    # --- the loop --------------------------------------------------------------------------------------

    def run(self) -> str:
        try:
            self.outcome = self._run()
        except SimulatedCrash:
            self.outcome = "crashed"
            self._emit("crashed", points=len(self.points), last=self.points[-1] if self.points else None)
        except Superseded:
            self.outcome = "superseded"
            self._emit("superseded")
        except _StopRequested:
            self.outcome = "stopped"
            self._shutdown()
        except ApiError as exc:
            self.outcome = "failed"
            self._emit("failed", code=exc.code, error=exc.message)
        finally:
            if self._session is not None:
                self._session.stop_heartbeats()
        return self.outcome

    def _run(self) -> str:
        try:
            self._open(restore=self.restore_first)
        except ApiError as exc:
            if exc.code != "INVALID_TRANSITION":
                raise
            detail = self.api.contract(self.contract_id)  # finished while no supervisor ran?
            if detail["status"] != "completed":
                raise
            self._emit("completed", phase=detail["phase"], already=True)
            return "completed"
        errors = 0
        backoff = 0.0
        restart = False
        while True:
            try:
                if backoff:
                    self._sleep(backoff)
                    backoff = 0.0
                if restart:
                    self._restart()
                    restart = False
                self._check()
                detail = self.api.contract(self.contract_id)
                status = str(detail["status"])
                if status == "completed":
                    self._finish(detail)
                    return "completed"
                if status in FINISHED_CONTRACT:
                    self._s().update(state=SupervisorState.FAILED, activity=f"contract is {status}")
                    self._emit("finished", status=status)
                    return "failed"
                if status in ("paused", "blocked"):
                    self._s().update(state=SupervisorState.BLOCKED, activity=f"contract is {status}")
                    self._sleep(self.config.poll_interval * 5)
                    continue
                self._work_phase(detail)
                self._await_advance(str(detail["phase"]))
                errors = 0
            except (SimulatedCrash, _StopRequested, Superseded):
                raise
            except _RestartRequested:
                restart = True
            except StaleSave as exc:  # our seq fell behind the server's (should not happen): catch up
                self._s().seq = max(self._s().seq, int(exc.details.get("save_seq", 0)))
                self._emit("resynced", seq=self._s().seq)
            except ApiError as exc:
                if exc.code in ("CONTRACT_NOT_FOUND", "UNAUTHORIZED", "FORBIDDEN", "SUPERVISOR_NOT_FOUND"):
                    raise
                errors += 1
                self._emit("error", code=exc.code, error=exc.message, consecutive=errors)
                if errors >= self.config.max_consecutive_errors:
                    raise
                backoff = min(5.0, 0.1 * 2**errors)

    # --- start, restore, restart, finish ---------------------------------------------------------------

    def _open(self, *, restore: bool) -> None:
        if restore:
            session = SupervisorSession.restore(self.api, self.contract_id, daemon_id=self.daemon_id)
            self.restores += 1
        else:
            session = SupervisorSession.start(self.api, self.contract_id, daemon_id=self.daemon_id)
        self._session = session
        if self.config.own_heartbeats:
            session.start_heartbeats(interval=self.config.heartbeat_interval, jitter=self.config.heartbeat_jitter)
        r = session.restored
        if r is None:
            self._emit("started", task_id=session.task_id, generation=session.generation)
            return
        self._emit(
            "restored",
            mode=r.mode,
            generation=r.generation,
            next_seq=r.next_seq,
            conversation=len(r.conversation_history),
            spawned=len(r.spawned_task_ids),
            waiting_on=len(r.waiting_on_task_ids),
            pending_questions=len(r.pending_questions),
            answered_questions=len(r.answered_questions),
            warnings=r.warnings,
        )
        # Seed 3.4 step 7: the restoration context goes to the "LLM" first.
        session.say(r.restoration_context, role="user", key=f"restored/{r.generation}")
        session.update(activity=f"restored ({r.mode}) as generation {r.generation}")
        session.save(SavePoint.LLM_RESPONSE)
        for q in r.answered_questions:
            self._take_answer(q)

    def _restart(self) -> None:
        """The service asked for a restart: save cleanly, stop, and come back by restoring."""
        s = self._s()
        s.restart_requested = False
        s.update(state=SupervisorState.IDLE, activity="restarting on request")
        s.save(SavePoint.SHUTDOWN)
        s.stop_heartbeats()
        self._emit("restarting")
        self._open(restore=True)

    def _finish(self, detail: Mapping[str, Any]) -> None:
        s = self._s()
        s.update(state=SupervisorState.COMPLETED, activity="contract completed", progress=100)
        s.say("The contract is complete.", key="completed")
        try:
            s.save(SavePoint.SHUTDOWN)
            s.send_heartbeat()  # the last word on the status endpoint: completed, 100 %
        except ApiError as exc:  # the service already closed the supervisor: nothing is lost
            log.debug("final save of %s: %s", self.contract_id, exc)
        self._emit("completed", phase=detail["phase"])

    def _shutdown(self) -> None:
        if self._session is None or self._session.superseded:
            return
        self._session.update(state=SupervisorState.IDLE, activity="stopped")
        try:
            self._session.save(SavePoint.SHUTDOWN)
            self._emit("stopped")
        except ApiError as exc:
            self._emit("error", code=exc.code, error=f"shutdown save failed: {exc.message}")

    # --- one phase -------------------------------------------------------------------------------------

    def _work_phase(self, detail: Mapping[str, Any]) -> None:
        s = self._s()
        phase = str(detail["phase"])
        deliverables: list[JSON] = list(detail["deliverables"])
        self._progress(detail)

        # 1. the phase starts
        if s.phase != phase or not s.has_key(f"{phase}/enter"):
            listing = ", ".join(d["name"] for d in deliverables) or "nothing"
            s.update(phase=phase, state=SupervisorState.WORKING, activity=f"starting phase {phase}")
            s.say(f"Phase {phase}: I will deliver {listing}.", key=f"{phase}/enter")
            s.save(SavePoint.PHASE_CHANGE)
            self._emit("phase", phase=phase)
            if s.heartbeats is not None:
                s.heartbeats.beat_now()
            self._point(f"{phase}:entered")
        else:
            s.update(state=SupervisorState.WORKING)

        # 2. its tasks: spawned once (found by name after a crash), then started
        names = [f"{phase}-step-{i}" for i in range(1, self.config.tasks_per_phase + 1)]
        tasks = {str(t["name"]): t for t in self.api.tasks(self.contract_id) if not t["is_supervisor"]}
        for name in names:
            task = tasks.get(name)
            if task is None:
                self._pause()
                s.update(activity=f"spawning {name}")
                task = self.api.spawn_task(self.contract_id, name)
                self._point(f"{phase}:spawned-unsaved:{name}")
                s.track_task(str(task["id"]))
                s.say(f"Spawned task {name}.", key=f"{phase}/spawn/{name}")
                s.save(SavePoint.TASK_SPAWN)
                self._emit("task_spawned", phase=phase, task=name, task_id=str(task["id"]))
                self._point(f"{phase}:spawned:{name}")
            elif str(task["id"]) not in s.known_tasks():  # spawned, then crashed before saving
                s.track_task(str(task["id"]), waiting=task["status"] in OPEN_TASK)
                s.say(f"Spawned task {name}.", key=f"{phase}/spawn/{name}")
                s.save(SavePoint.TASK_SPAWN)
                self._emit("task_adopted", phase=phase, task=name, task_id=str(task["id"]))
            tasks[name] = task
        for name in names:
            if tasks[name]["status"] == "pending":
                self._pause()
                tasks[name] = self.api.set_task_status(self.contract_id, str(tasks[name]["id"]), "running")
                self._point(f"{phase}:started:{name}")

        # 3. the deliverables but the last
        for d in deliverables[:-1]:
            if not d["completed"]:
                self._deliver(phase, d)

        # 4. the owner's answer, when this phase needs one
        if self.config.ask_in_phase == phase:
            self._ask_and_wait(phase)

        # 5. the tasks finish
        for name in names:
            task = tasks[name]
            if task["status"] in OPEN_TASK:
                self._pause()
                s.update(activity=f"finishing {name}")
                self.api.set_task_status(self.contract_id, str(task["id"]), "completed")
                self._point(f"{phase}:completed-unsaved:{name}")
                s.task_finished(str(task["id"]))
                s.say(f"Task {name} is done.", key=f"{phase}/done/{name}")
                s.save(SavePoint.LLM_RESPONSE)
                self._emit("task_completed", phase=phase, task=name)
                self._point(f"{phase}:completed:{name}")
            else:
                s.task_finished(str(task["id"]))

        # 6. the last deliverable (the gate is met: the service advances the phase)
        for d in deliverables[-1:]:
            if not d["completed"]:
                self._deliver(phase, d)

    def _deliver(self, phase: str, d: Mapping[str, Any]) -> None:
        s = self._s()
        self._pause()
        s.update(activity=f"writing {d['name']}")
        self.api.complete_deliverable(self.contract_id, str(d["id"]), phase=phase)
        self._point(f"{phase}:delivered-unsaved:{d['id']}")
        s.say(f"Delivered {d['name']}.", key=f"{phase}/deliverable/{d['id']}")
        s.save(SavePoint.LLM_RESPONSE)
        self._emit("deliverable", phase=phase, deliverable=d["id"])
        self._point(f"{phase}:deliverable:{d['id']}")

    def _ask_and_wait(self, phase: str) -> None:
        s = self._s()
        text = f"[{phase}] {self.config.question}"
        asked = [q for q in self.api.questions(self.contract_id) if q["question"] == text]
        if asked:
            question = asked[0]
        else:
            self._pause()
            s.update(state=SupervisorState.WAITING_FOR_USER, activity=f"asking the owner: {self.config.question}")
            question = self.api.ask_question(self.contract_id, text)
            self._point(f"{phase}:asked-unsaved")
            s.pending_questions = [{"id": str(question["id"]), "question": text}]
            s.say(f"I asked the owner: {self.config.question}", key=f"{phase}/question")
            s.save(SavePoint.QUESTION_ASKED)
            self._emit("question_asked", phase=phase, question_id=str(question["id"]))
            self._point(f"{phase}:question_asked")
        while question["status"] != "answered":
            s.update(state=SupervisorState.WAITING_FOR_USER, activity=f"waiting for the owner: {self.config.question}")
            self._sleep(self.config.poll_interval)
            found = [q for q in self.api.questions(self.contract_id) if q["id"] == question["id"]]
            if not found:
                return
            question = found[0]
        self._take_answer(question)

    def _take_answer(self, question: Mapping[str, Any]) -> None:
        """Record the answer in the conversation (saved), then acknowledge it: an answer acknowledged is
        one the supervisor has durably got, so a crash in between only means it is delivered again."""
        s = self._s()
        qid = str(question["id"])
        added = s.say(
            f"The owner answered {question['question']!r}: {question.get('answer')}", role="user", key=f"answer/{qid}"
        )
        before = len(s.pending_questions)
        s.pending_questions = [q for q in s.pending_questions if str(q.get("id")) != qid]
        s.update(state=SupervisorState.WORKING, activity="working with the owner's answer")
        if added or before != len(s.pending_questions):
            s.save(SavePoint.LLM_RESPONSE)
        if question.get("delivered_at") is None:
            self.api.acknowledge_answer(self.contract_id, qid)
            self._emit("answer_delivered", question_id=qid)

    def _await_advance(self, phase: str) -> None:
        """Wait for the service to move the contract on. Back to work when something of ours is missing;
        if the gate has been met for ``advance_after`` seconds and nothing moved (auto-advance off, or
        the gate was met by an event that does not evaluate it, like an answer), advance by hand."""
        s = self._s()
        s.update(state=SupervisorState.IDLE, activity=f"waiting for phase {phase} to advance")
        ready_since: float | None = None
        while True:
            self._check()
            detail = self.api.contract(self.contract_id)
            if detail["phase"] != phase or detail["status"] in FINISHED_CONTRACT:
                return
            if any(not d["completed"] for d in detail["deliverables"]):
                return  # not everything of ours is there (e.g. someone else's change): redo the phase
            if detail["status"] != "active":
                ready_since = None  # waiting for input (a phase confirmation, a question) or paused
                self._sleep(self.config.poll_interval)
                continue
            ready, next_phase = self._readiness(detail)
            if not ready:
                self._sleep(self.config.poll_interval)
                return  # something is missing: look at the phase again
            now = time.monotonic()
            ready_since = ready_since or now
            if now - ready_since >= self.config.advance_after:
                self._advance_by_hand(detail, next_phase)
                ready_since = None
            self._sleep(self.config.poll_interval)

    def _readiness(self, detail: Mapping[str, Any]) -> tuple[bool, str | None]:
        phases = list(detail["phases"])
        idx = phases.index(detail["phase"])
        fallback_next = phases[idx + 1] if idx + 1 < len(phases) else None
        try:
            r = self.api.phase_readiness(self.contract_id)
        except ApiError as exc:
            if exc.code == "FEATURE_DISABLED":  # no gates: our work is the gate
                return True, fallback_next
            raise
        return bool(r["ready"]), r.get("next_phase", fallback_next)

    def _advance_by_hand(self, detail: Mapping[str, Any], next_phase: str | None) -> None:
        try:
            if next_phase:
                self.api.change_phase(self.contract_id, next_phase, expected_version=int(detail["version"]))
            else:
                try:
                    # check-completion only checks unless confirmed; confirm as the old automatic
                    # completion did: never past the owner's phase guard or disabled auto-complete
                    confirm = not detail.get("phase_guard") and bool(detail.get("auto_complete_enabled", True))
                    self.api.check_completion(self.contract_id, confirmed=confirm)
                except ApiError as exc:
                    if exc.code != "FEATURE_DISABLED":
                        raise
                    self.api.change_status(self.contract_id, "completed", reason="all deliverables delivered")
            self._emit("advanced_by_hand", phase=detail["phase"], to=next_phase or "completed")
        except ApiError as exc:
            if exc.code not in ("VERSION_CONFLICT", "INVALID_TRANSITION", "PHASE_GUARD_REQUIRED", "VALIDATION_FAILED"):
                raise
            self._emit("advance_refused", code=exc.code)

    # --- small things ----------------------------------------------------------------------------------

    def _progress(self, detail: Mapping[str, Any]) -> None:
        phases = list(detail["phases"])
        idx = phases.index(detail["phase"]) if detail["phase"] in phases else 0
        delivs = list(detail["deliverables"])
        frac = sum(1 for d in delivs if d["completed"]) / len(delivs) if delivs else 0.0
        self._s().update(progress=int(100 * (idx + frac) / max(1, len(phases))))

    def _check(self) -> None:
        if self._crash.is_set():
            raise SimulatedCrash(self.contract_id)
        s = self._session
        if s is not None and s.superseded:
            raise Superseded(409, "CONFLICT", "restored elsewhere", {"reason": "superseded"})
        if self._stop.is_set():
            raise _StopRequested
        if s is not None and s.restart_requested:
            raise _RestartRequested

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._crash.wait(min(left, 0.05))

    def _pause(self) -> None:
        self._sleep(self.config.step_delay)

    def _point(self, name: str) -> None:
        """A place a crash can be simulated at: right after the action it names. ``…-unsaved`` points
        come after the action and before the save recording it (the windows a crash hurts most)."""
        self.points.append(name)
        if self.crash_when is not None and self.crash_when(name):
            self._crash.set()
        self._check()

    def _emit(self, kind: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, {"contract_id": self.contract_id, **fields})
        else:
            log.info("%s %s %s", self.contract_id[:8], kind, fields)


# --- as a process ------------------------------------------------------------------------------------------


def warn_token_in_argv(argv: Sequence[str]) -> bool:
    """Warn on stderr when the token was given as an argument (every user of the machine reads those in
    ps); True when it was. ``MAKIMA_TOKEN`` is the way that shows nowhere."""
    if not any(a == "--token" or a.startswith("--token=") for a in argv):
        return False
    print(
        "warning: --token puts the secret in the process's arguments, visible to other users of this "
        "machine (ps, /proc); set MAKIMA_TOKEN instead",
        file=sys.stderr,
    )
    return True


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m makima.client.reference",
        description="A daemon running the scripted reference supervisor on one contract.",
    )
    p.add_argument("--api-url", default=os.environ.get("MAKIMA_API_URL", "http://127.0.0.1:8000"))
    p.add_argument(
        "--token",
        default=os.environ.get("MAKIMA_TOKEN"),
        help="Prefer MAKIMA_TOKEN: a flag's value is visible to other users (ps).",
    )
    p.add_argument("--contract-id", required=True)
    p.add_argument("--restore", action="store_true", help="Take the supervisor over (restore) instead of starting it.")
    p.add_argument("--daemon-name", default=f"{socket.gethostname()}-{os.getpid()}")
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        help="At most this long between beats (default: the service's).",
    )
    p.add_argument("--step-delay", type=float, default=0.2)
    p.add_argument("--tasks-per-phase", type=int, default=2)
    p.add_argument("--ask-in-phase", default=None)
    p.add_argument("--question", default=ReferenceConfig.question)
    p.add_argument("--advance-after", type=float, default=ReferenceConfig.advance_after)
    p.add_argument(
        "--crash-at",
        default=None,
        metavar="POINT",
        help="Die (exit 137, as if SIGKILLed) right at this point, e.g. plan:spawned-unsaved:plan-step-1.",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 completed, 1 failed, 2 superseded or stopped, 3 the API unreachable."""
    args = _parser().parse_args(argv)
    warn_token_in_argv(sys.argv[1:] if argv is None else argv)
    lock = threading.Lock()

    def emit(kind: str, fields: Mapping[str, Any]) -> None:
        with lock:
            print(json.dumps({"event": kind, "t": round(time.time(), 3), **fields}, default=str), flush=True)

    api = MakimaApi(args.api_url, args.token)
    supervisor: ReferenceSupervisor | None = None
    try:
        daemon = Daemon(api, args.daemon_name, capacity=1, heartbeat_interval=args.heartbeat_interval)
        daemon.start()
        emit("daemon", {"daemon_id": daemon.id, "name": daemon.name, "pid": os.getpid()})
        config = ReferenceConfig(
            tasks_per_phase=args.tasks_per_phase,
            step_delay=args.step_delay,
            heartbeat_interval=args.heartbeat_interval,
            own_heartbeats=False,
            ask_in_phase=args.ask_in_phase,
            question=args.question,
            advance_after=args.advance_after,
        )

        def die_at(point: str) -> bool:
            if point == args.crash_at:
                emit("killed", {"point": point})
                os._exit(137)  # no cleanup, no goodbye: exactly what a kill at this point leaves behind
            return False

        supervisor = ReferenceSupervisor(
            api,
            args.contract_id,
            daemon_id=daemon.id,
            restore=args.restore,
            config=config,
            on_event=emit,
            crash_when=die_at if args.crash_at else None,
        )
        daemon.host(supervisor)
        daemon.join()
        daemon.heartbeats.stop()
        try:
            daemon.beat()  # a last daemon heartbeat: confirms the worktrees the service asks back
        except ApiError as exc:
            log.debug("last heartbeat: %s", exc)
    except ApiUnreachable as exc:
        emit("unreachable", {"error": str(exc)})
        return 3
    except ApiError as exc:
        emit("failed", {"code": exc.code, "error": exc.message})
        return 1
    finally:
        api.close()
    outcome = supervisor.outcome if supervisor is not None else None
    return {"completed": 0, "failed": 1}.get(outcome or "failed", 2)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
