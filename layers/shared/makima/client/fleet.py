"""A demo fleet: N contracts, each driven by a reference supervisor on a daemon; some crash mid-phase
and are restored from a second daemon; the owner answers the supervisors' questions. With
``restart_dead`` (the fleet beside ``makima dev --demo``) a crashed supervisor is left to the service as
in production: the timeout sweep declares it dead, the owner asks for a restart, and a daemon adopts
it (claims its task and restores it) on its own. ``makima demo``
runs one in the foreground; ``run_fleet_in_background`` runs one beside the local stack.

With an admin token the fleet works as a fresh demo user (a user token to own the contracts and answer
questions, a daemon token for the daemons), as a real deployment would; with any other token it runs
as that token's principal and asks no questions (a daemon cannot answer them).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from makima.client.api import ApiError, ApiUnreachable, MakimaApi
from makima.client.daemon import Adopt, Daemon, Hosted
from makima.client.reference import ReferenceConfig, ReferenceSupervisor

Out = Callable[[str], None]
ANSWER = "Take the simplest approach that works; keep it tested. (demo owner)"
SHOWN_EVENTS = frozenset(
    {"phase", "question_asked", "answer_delivered", "advanced_by_hand", "failed", "superseded", "error"}
)


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class FleetConfig:
    supervisors: int = 5
    crash: int = 2  # how many supervisors crash mid-phase (and are restored on the second daemon)
    contract_type: str = "specification"
    until_done: bool = True  # stop when every contract is completed; else keep N in flight
    duration: float | None = None  # the deadline (until_done), or how long to keep going (None: until stopped)
    step_delay: float = 0.2
    heartbeat_interval: float = 2.0
    tasks_per_phase: int = 2
    questions: bool = True
    answer_after: float = 1.0  # the owner answers a question this long after seeing it
    restore_after: float = 1.0  # a crashed supervisor is restored this long after its crash
    # Instead: wait for the service to declare a crashed supervisor dead, ask for a restart, let a
    # daemon adopt it (``restore_after`` then does nothing).
    restart_dead: bool = False
    status_every: float = 5.0  # how often a crashed supervisor's status is looked at (restart_dead)
    progress_every: float = 2.0
    startup_wait: float = 10.0  # wait this long for the API to answer /health (a stack starting up)
    seed: int | None = None

    def deadline(self) -> float:
        return self.duration if self.duration is not None else (600.0 if self.until_done else float("inf"))


@dataclass
class Member:
    number: int
    contract_id: str
    supervisor: ReferenceSupervisor
    crash_planned: bool
    phase: str = ""
    crashes: int = 0
    restores: int = 0
    outcome: str | None = None
    crashed_at: float | None = None
    restart_asked: bool = False
    looked_at: float = 0.0


@dataclass
class FleetSummary:
    contracts: int = 0
    completed: int = 0
    crashed: int = 0
    restored: int = 0
    failed: int = 0
    tasks: int = 0
    duplicate_tasks: int = 0
    questions_answered: int = 0
    elapsed: float = 0.0
    incomplete: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.contracts > 0 and self.completed == self.contracts and self.duplicate_tasks == 0

    def line(self) -> str:
        return (
            f"demo: {self.completed}/{self.contracts} contracts completed, {self.crashed} crashed and "
            f"{self.restored} restored, {self.tasks} tasks ({self.duplicate_tasks} duplicated), "
            f"{self.questions_answered} questions answered, in {self.elapsed:.1f}s"
        )


class Fleet:
    def __init__(self, api_url: str, token: str | None, config: FleetConfig | None = None, *, out: Out = _print):
        self.api_url = api_url
        self.token = token
        self.config = config or FleetConfig()
        self.out = out
        self.run_id = uuid.uuid4().hex[:6]
        self.members: dict[str, Member] = {}
        self.summary: FleetSummary | None = None
        self._rng = random.Random(self.config.seed)  # noqa: S311 - demo choices, not cryptography
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._t0 = time.monotonic()
        self._seen_questions: dict[str, float] = {}
        self._answered = 0
        self._daemon_b: Daemon | None = None
        # contract id -> (supervisor made for adoption, not yet restored; the adopting daemon's name)
        self._adopting: dict[str, tuple[ReferenceSupervisor, str]] = {}

    def stop(self) -> None:
        self._stop.set()

    # --- output ----------------------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        self.out(f"[{time.monotonic() - self._t0:6.1f}s] {line}")

    def _label(self, contract_id: str) -> str:
        m = self.members.get(contract_id)
        return f"#{m.number} {contract_id[:8]}" if m else contract_id[:8]

    def _on_event(self, kind: str, fields: Mapping[str, Any]) -> None:
        cid = str(fields["contract_id"])
        with self._lock:
            m = self.members.get(cid)
            if m is not None and kind == "phase":
                m.phase = str(fields["phase"])
        if kind == "restored":
            with self._lock:
                adopted = self._adopting.pop(cid, None)
                if adopted is not None and m is not None and m.outcome == "crashed":
                    m.supervisor, m.outcome, m.crashed_at, m.restart_asked = adopted[0], None, None, False
                    m.restores += 1
            if adopted is not None:
                host = adopted[1]
                self._say(f"{self._label(cid)} adopted by daemon {host}: it claimed the dead supervisor's task")
            else:
                host = self._daemon_b.name if self._daemon_b else "?"
            self._say(
                f"{self._label(cid)} restored on {host}: mode "
                f"{fields['mode']}, generation {fields['generation']}, {fields['conversation']} messages, "
                f"{fields['spawned']} tasks known, {fields['waiting_on']} still open"
            )
        elif kind == "crashed":
            self._say(f"{self._label(cid)} CRASHED after {fields.get('last')} (no shutdown save)")
        elif kind == "phase":
            self._say(f"{self._label(cid)} phase {fields['phase']}")
        elif kind in SHOWN_EVENTS:
            rest = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "contract_id")
            self._say(f"{self._label(cid)} {kind} {rest}")

    def _on_outcome(self, supervisor: Hosted, outcome: str) -> None:
        with self._lock:
            m = self.members.get(supervisor.contract_id)
            if m is None or m.supervisor is not supervisor:
                return
            m.outcome = outcome
            if outcome == "crashed":
                m.crashes += 1
                m.crashed_at = time.monotonic()
            elif outcome == "completed":
                self._say(f"{self._label(m.contract_id)} completed")

    # --- the run ---------------------------------------------------------------------------------------

    def run(self) -> FleetSummary:
        cfg = self.config
        self._t0 = time.monotonic()
        admin = MakimaApi(self.api_url, self.token)
        admin.wait_healthy(min(cfg.startup_wait, cfg.deadline()))
        owner, daemons_api, can_answer = self._identity(admin)
        phases = [str(p["id"]) for p in owner.contract_type(cfg.contract_type)["phases"]]
        self._phases = phases
        self._ask_in = (phases[1] if len(phases) > 1 else phases[0]) if cfg.questions and can_answer else None
        self._crash_phase = phases[len(phases) // 2]
        self._daemons_api = daemons_api
        daemon_a = Daemon(
            daemons_api,
            f"demo-{self.run_id}-a",
            heartbeat_interval=cfg.heartbeat_interval,
            on_outcome=self._on_outcome,
            adopt=self._adopter(lambda: self._daemon_a) if cfg.restart_dead else None,
        ).start()
        self._daemon_a = daemon_a
        self._say(
            f"fleet {self.run_id}: {cfg.supervisors} {cfg.contract_type} contracts on daemon {daemon_a.name}; "
            f"{min(cfg.crash, cfg.supervisors)} will crash in phase {self._crash_phase}"
            + (f"; questions in phase {self._ask_in}" if self._ask_in else "")
        )
        launched = 0
        for _ in range(cfg.supervisors):
            launched += 1
            self._launch(owner, launched, crash=launched <= cfg.crash)
        last_progress = 0.0
        deadline = self._t0 + cfg.deadline()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self._restore_crashed(now)
                if cfg.restart_dead:
                    self._restart_dead(owner, now)
                if can_answer:
                    self._answer_questions(owner, now)
                if now - last_progress >= cfg.progress_every:
                    self._progress()
                    last_progress = now
                with self._lock:
                    members = list(self.members.values())
                if cfg.until_done:
                    if all(m.outcome in ("completed", "failed", "superseded") for m in members):
                        break
                else:
                    # A crashed supervisor left to the service (restart_dead) takes minutes to come back:
                    # meanwhile another contract takes its place.
                    waiting = (None,) if cfg.restart_dead else (None, "crashed")
                    live = sum(1 for m in members if m.outcome in waiting)
                    p_crash = cfg.crash / max(1, cfg.supervisors)
                    while live < cfg.supervisors and now < deadline:
                        launched += 1
                        live += 1
                        self._launch(owner, launched, crash=self._rng.random() < p_crash)
                if now >= deadline:
                    self._say("time is up")
                    break
                self._stop.wait(0.25)
        finally:
            daemon_a.stop()
            if self._daemon_b is not None:
                self._daemon_b.stop()
        self.summary = self._summarise(owner)
        self._say(self.summary.line())
        for api in {id(a): a for a in (admin, owner, daemons_api)}.values():
            api.close()
        return self.summary

    def _identity(self, api: MakimaApi) -> tuple[MakimaApi, MakimaApi, bool]:
        try:
            user = api.create_user(f"demo-{self.run_id}")
        except ApiError as exc:
            if exc.code != "FORBIDDEN":
                raise
            self._say("the token is not an admin's: running as its principal, without questions")
            return api, api, False
        owner = api.issue_token(str(user["id"]), kind="user", name="demo owner")["token"]
        daemon = api.issue_token(str(user["id"]), kind="daemon", name="demo daemons")["token"]
        self._say(
            f"demo user {user['name']} ({user['id']}): a user token owns the contracts, daemons use a daemon token"
        )
        return api.with_token(str(owner)), api.with_token(str(daemon)), True

    def _reference_config(self) -> ReferenceConfig:
        cfg = self.config
        return ReferenceConfig(
            tasks_per_phase=cfg.tasks_per_phase,
            step_delay=cfg.step_delay,
            poll_interval=min(0.25, max(0.05, cfg.step_delay)),
            heartbeat_interval=cfg.heartbeat_interval,
            own_heartbeats=False,
            ask_in_phase=self._ask_in,
        )

    def _crash_plan(self) -> Callable[[str], bool]:
        """Crash at the k-th action inside the crash phase: after a spawn, a start or a deliverable,
        never at the phase's edges."""
        k = self._rng.randint(2, 1 + 2 * self.config.tasks_per_phase)
        prefix = f"{self._crash_phase}:"
        seen = [0]

        def when(point: str) -> bool:
            if point.startswith(prefix):
                seen[0] += 1
                return seen[0] == k
            return False

        return when

    def _launch(self, owner: MakimaApi, number: int, *, crash: bool) -> None:
        contract = owner.create_contract(
            f"demo {self.run_id} #{number}",
            contract_type=self.config.contract_type,
            description="Driven by makima's scripted reference supervisor.",
        )
        cid = str(contract["id"])
        sup = ReferenceSupervisor(
            self._daemons_api,
            cid,
            daemon_id=self._daemon_a.id,
            config=self._reference_config(),
            on_event=self._on_event,
            crash_when=self._crash_plan() if crash else None,
        )
        with self._lock:
            self.members[cid] = Member(number, cid, sup, crash)
        self._daemon_a.host(sup)

    def _adopter(self, daemon: Callable[[], Daemon | None]) -> Adopt:
        """What a daemon of this fleet hosts for an adoptable contract: a restoring reference supervisor
        for a member of this fleet whose supervisor crashed; nothing for anything else."""

        def adopt(contract_id: str) -> Hosted | None:
            host = daemon()
            with self._lock:
                m = self.members.get(contract_id)
                if host is None or m is None or m.outcome != "crashed" or self._stop.is_set():
                    return None
            sup = ReferenceSupervisor(
                self._daemons_api,
                contract_id,
                daemon_id=host.id,
                restore=True,
                config=self._reference_config(),
                on_event=self._on_event,
            )
            with self._lock:
                self._adopting[contract_id] = (sup, host.name)  # the member takes it once it restored
            return sup

        return adopt

    def _restart_dead(self, owner: MakimaApi, now: float) -> None:
        """As an owner would: a crashed supervisor the service declared dead gets a restart request;
        a daemon then adopts it by itself."""
        with self._lock:
            due = [
                m
                for m in self.members.values()
                if m.outcome == "crashed" and not m.restart_asked and now - m.looked_at >= self.config.status_every
            ]
        for m in due:
            m.looked_at = now
            try:
                status = owner.supervisor_status(m.contract_id)
                if status["alive"]:
                    continue
                owner.request_restart(m.contract_id, reason="demo: the supervisor died")
            except ApiError as exc:
                self._say(f"{self._label(m.contract_id)} restart not asked: {exc.code}")
                continue
            m.restart_asked = True
            self._say(f"{self._label(m.contract_id)} declared dead by the service: restart requested")

    def _restore_crashed(self, now: float) -> None:
        if self.config.restart_dead:
            return
        with self._lock:
            due = [
                m
                for m in self.members.values()
                if m.outcome == "crashed"
                and m.crashed_at is not None
                and now - m.crashed_at >= self.config.restore_after
            ]
        if not due:
            return
        if self._daemon_b is None:
            self._daemon_b = Daemon(
                self._daemons_api,
                f"demo-{self.run_id}-b",
                heartbeat_interval=self.config.heartbeat_interval,
                on_outcome=self._on_outcome,
            ).start()
            self._say(f"daemon {self._daemon_b.name} takes over crashed supervisors")
        for m in due:
            sup = ReferenceSupervisor(
                self._daemons_api,
                m.contract_id,
                daemon_id=self._daemon_b.id,
                restore=True,
                config=self._reference_config(),
                on_event=self._on_event,
            )
            with self._lock:
                m.supervisor = sup
                m.outcome = None
                m.crashed_at = None
                m.restores += 1
            self._daemon_b.host(sup)

    def _answer_questions(self, owner: MakimaApi, now: float) -> None:
        with self._lock:
            live = [m.contract_id for m in self.members.values() if m.outcome is None]
        for cid in live:
            try:
                pending = owner.questions(cid, status="pending")
            except ApiError:
                continue
            for q in pending:
                qid = str(q["id"])
                first = self._seen_questions.setdefault(qid, now)
                if now - first < self.config.answer_after:
                    continue
                try:
                    owner.answer_question(cid, qid, ANSWER)
                    self._answered += 1
                    self._say(f"{self._label(cid)} owner answered: {q['question']}")
                except ApiError as exc:
                    if exc.code != "CONFLICT":  # answered meanwhile
                        self._say(f"{self._label(cid)} could not answer: {exc}")

    def _progress(self) -> None:
        with self._lock:
            members = list(self.members.values())
        done = sum(1 for m in members if m.outcome == "completed")
        crashed = sum(m.crashes for m in members)
        restored = sum(m.restores for m in members)
        phases = Counter(m.phase for m in members if m.outcome is None and m.phase)
        where = " ".join(f"{p}:{phases[p]}" for p in self._phases if phases[p])
        self._say(
            f"progress: {done}/{len(members)} completed, {crashed} crashed, {restored} restored"
            + (f"; working: {where}" if where else "")
        )

    def _summarise(self, owner: MakimaApi) -> FleetSummary:
        with self._lock:
            members = list(self.members.values())
        s = FleetSummary(contracts=len(members), elapsed=time.monotonic() - self._t0)
        s.crashed = sum(m.crashes for m in members)
        s.restored = sum(m.restores for m in members)
        s.questions_answered = self._answered
        if not self.config.until_done:  # a long run: trust the outcomes, check the recent contracts only
            s.completed = sum(1 for m in members if m.outcome == "completed")
            s.failed = sum(1 for m in members if m.outcome == "failed")
            members = members[-2 * self.config.supervisors :]
            s.completed -= sum(1 for m in members if m.outcome == "completed")
            s.failed -= sum(1 for m in members if m.outcome == "failed")
        for m in members:
            try:
                status = owner.contract(m.contract_id)["status"]
                names = Counter(str(t["name"]) for t in owner.tasks(m.contract_id) if not t["is_supervisor"])
            except ApiError:
                status, names = "unknown", Counter()
            s.tasks += sum(names.values())
            s.duplicate_tasks += sum(c - 1 for c in names.values() if c > 1)
            if status == "completed":
                s.completed += 1
            else:
                s.incomplete.append(f"{m.contract_id} ({status}, supervisor {m.outcome})")
            if m.outcome == "failed":
                s.failed += 1
        return s


class FleetHandle:
    """A fleet running on a background thread: ``stop()`` ends it (supervisors saved cleanly) and
    returns its summary."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="makima-demo-fleet", daemon=True)

    def _run(self) -> None:
        try:
            self.fleet.run()
        except Exception as exc:
            self.error = exc
            self.fleet.out(f"demo fleet stopped: {exc}")

    def start(self) -> FleetHandle:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def summary(self) -> FleetSummary | None:
        return self.fleet.summary

    def wait(self, timeout: float | None = None) -> FleetSummary | None:
        self._thread.join(timeout)
        return self.fleet.summary

    def stop(self, timeout: float = 30.0) -> FleetSummary | None:
        self.fleet.stop()
        return self.wait(timeout)


def run_fleet_in_background(
    api_url: str,
    token: str | None,
    supervisors: int = 5,
    crash: int = 2,
    *,
    contract_type: str = "specification",
    continuous: bool = True,
    out: Out = _print,
    **overrides: Any,
) -> FleetHandle:
    """Start a demo fleet beside a stack that is starting (it waits for ``/health``). ``continuous``
    keeps ``supervisors`` contracts in flight until ``stop()``; otherwise it ends when all completed.
    For ``makima dev --demo N``::

        handle = run_fleet_in_background(f"http://{host}:{port}", admin_token, n, crash=min(2, n))
        try:
            uvicorn.run(...)
        finally:
            handle.stop()
    """
    # Beside a running stack, crashed supervisors come back the way they do in production: declared
    # dead by the timeout sweep, a restart asked for, adopted by a daemon.
    settings: dict[str, Any] = {"startup_wait": 120.0, "restart_dead": continuous, **overrides}
    config = FleetConfig(
        supervisors=supervisors, crash=crash, contract_type=contract_type, until_done=not continuous, **settings
    )
    return FleetHandle(Fleet(api_url, token, config, out=out)).start()


def demo_main(api_url: str, token: str | None, config: FleetConfig, *, out: Out = _print) -> int:
    """``makima demo``: 0 when every contract completed (and no task was duplicated), 1 otherwise,
    3 when the API cannot be reached, 130 on Ctrl-C."""
    fleet = Fleet(api_url, token, config, out=out)
    try:
        summary = fleet.run()
    except ApiUnreachable as exc:
        out(f"error: {exc}")
        return 3
    except ApiError as exc:
        out(f"error: {exc.code}: {exc.message}")
        return 1
    except KeyboardInterrupt:
        fleet.stop()
        out("interrupted")
        return 130
    for line in summary.incomplete:
        out(f"not completed: {line}")
    if not config.until_done:
        return 0 if summary.failed == 0 and summary.duplicate_tasks == 0 else 1
    return 0 if summary.ok else 1
