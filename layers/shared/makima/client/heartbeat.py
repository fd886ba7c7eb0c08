"""Heartbeats from the supervisor's side: the answer the service gives to each, and a background loop
that beats at an interval with jitter (so a fleet started at once does not beat in lockstep)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("makima.client.heartbeat")

DEFAULT_INTERVAL = 30.0  # seconds; [contracts] heartbeat_interval_seconds on the service
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

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> HeartbeatAnswer:
        return cls(
            task_id=str(body.get("task_id", "")),
            accepted=bool(body.get("accepted", False)),
            error=body.get("error"),
            sync_requested=bool(body.get("sync_requested", False)),
            restart_requested=bool(body.get("restart_requested", False)),
            superseded=bool(body.get("superseded", False)),
        )


class HeartbeatLoop:
    """Calls ``beat`` now and then every ``interval`` seconds (± ``jitter``) on a daemon thread until
    stopped. A failing beat is logged and counted, never fatal: the service tolerates a missed heartbeat
    or two, and the next one recovers. ``beat_now()`` beats early (e.g. after a state change)."""

    def __init__(
        self,
        beat: Callable[[], object],
        *,
        interval: float = DEFAULT_INTERVAL,
        jitter: float = DEFAULT_JITTER,
        name: str = "makima-heartbeat",
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.interval = interval
        self.jitter = jitter
        self.beats = 0
        self.failures = 0
        self.last_error: BaseException | None = None
        self._beat = beat
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

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
