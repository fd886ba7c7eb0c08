"""Heartbeats from the supervisor's side: the answer the service gives to each, and a background loop
that beats at an interval with jitter (so a fleet started at once does not beat in lockstep).

The interval is the service's: every answer a client paces itself by (supervisor start, restore,
daemon registration, heartbeat answers) carries ``heartbeat_interval_seconds``, and the loop follows
it (``HeartbeatLoop.follow``). A client may ask to beat faster (tests, demos), never slower: the service
declares a supervisor dead after its timeout, which it sets from its own interval."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("makima.client.heartbeat")

DEFAULT_INTERVAL = 30.0  # seconds; until the service says otherwise ([contracts] heartbeat_interval_seconds)
DEFAULT_JITTER = 0.1  # each wait is interval * uniform(1 - jitter, 1 + jitter)


@dataclass(frozen=True)
class HeartbeatAnswer:
    """What the service wants from the supervisor, per heartbeat."""

    task_id: str
    accepted: bool
    error: str | None = None
    sync_requested: bool = False  # save the full state now (PUT …/supervisor/state)
    restart_requested: bool = False  # restart: save, stop, restore
    superseded: bool = False  # restored elsewhere under a newer generation: stop
    heartbeat_interval: float | None = None  # the service's interval (None from an older service)
    code: str | None = None  # why it was refused (INVALID_REQUEST, SUPERVISOR_NOT_FOUND, CONFLICT)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> HeartbeatAnswer:
        return cls(
            task_id=str(body.get("task_id") or ""),
            accepted=bool(body.get("accepted", False)),
            error=body.get("error"),
            sync_requested=bool(body.get("sync_requested", False)),
            restart_requested=bool(body.get("restart_requested", False)),
            superseded=bool(body.get("superseded", False)),
            heartbeat_interval=interval_of(body),
            code=body.get("code"),
        )


def interval_of(body: Mapping[str, Any]) -> float | None:
    """The ``heartbeat_interval_seconds`` an answer carries, if it carries a sane one."""
    value = body.get("heartbeat_interval_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


class HeartbeatLoop:
    """Calls ``beat`` now and then every ``interval`` seconds (± ``jitter``) on a daemon thread until
    stopped. A failing beat is logged and counted, never fatal: the service tolerates a missed heartbeat
    or two, and the next one recovers. ``beat_now()`` beats early (e.g. after a state change).

    ``interval=None`` follows the service: ``DEFAULT_INTERVAL`` until ``follow`` is told the service's.
    An explicit ``interval`` is the most the caller wants to wait; the service's shorter one wins."""

    def __init__(
        self,
        beat: Callable[[], object],
        *,
        interval: float | None = None,
        jitter: float = DEFAULT_JITTER,
        name: str = "makima-heartbeat",
        rng: random.Random | None = None,
    ) -> None:
        if interval is not None and interval <= 0:
            raise ValueError("interval must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.requested = interval
        self.interval = interval if interval is not None else DEFAULT_INTERVAL
        self.jitter = jitter
        self.beats = 0
        self.failures = 0
        self.last_error: BaseException | None = None
        self._beat = beat
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def follow(self, service_interval: float | None) -> None:
        """Beat at the service's interval (or faster, if the caller asked for faster). A change takes
        effect from the next wait."""
        if service_interval is None or service_interval <= 0:
            return
        wanted = service_interval if self.requested is None else min(self.requested, service_interval)
        if wanted != self.interval:
            log.info("heartbeat interval %.3g s (the service's is %.3g s)", wanted, service_interval)
            self.interval = wanted

    def next_wait(self) -> float:
        return self.interval * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def start(self) -> HeartbeatLoop:
        self._thread.start()
        return self

    def beat_now(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop beating. Safe to call from the beat itself (e.g. when superseded)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._beat()
                self.beats += 1
            except Exception as exc:  # a lost heartbeat is tolerated; keep beating
                self.failures += 1
                self.last_error = exc
                log.warning("heartbeat failed: %s", exc)
            if self._stop.is_set():
                break
            self._wake.wait(self.next_wait())
            self._wake.clear()
