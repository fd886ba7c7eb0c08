"""The principals of recently seen tokens, so that a request of the local stack does not look its token up.

Every request used to start with the token lookup: a threadpool hop and a SELECT (a round trip), 9 to 17 %
of a request's CPU on the local stack (docs/performance.md, issue 15). A token's principal changes only
one way: the token is revoked (a user's role and a token's kind never change; neither row is deleted).
So the principal of a live token can be kept, as long as its revocation reaches the cache at once:

- revoked through this process's API, the route forgets it before answering (``forget``), so the
  revoking client's next request is refused (the same guarantee as without a cache);
- revoked anywhere else (another process, an operator's ``UPDATE``), a trigger on ``api_tokens``
  NOTIFYs on commit (migration 0020) and the process's listener forgets it as the notice arrives
  (``local/sync_listener.py``: milliseconds);
- the cache answers only while that listener holds its LISTEN (``resume``): while the listener is down a
  notice could be lost, so nothing is answered from the cache and everything cached is dropped, and
  every request looks its token up as before until the listener is back.

A lookup that started before a revocation must not put the revoked principal back after the revocation
emptied its entry: each store carries the cache's generation read before the lookup's SELECT, and any
``forget``/``clear`` moves the generation on, so such a store is dropped (``remember``).

Bounded: at most ``max_entries`` tokens (the oldest dropped first) for at most ``max_age`` seconds each
(a backstop: the notices are what keeps it true). Lambda containers have no listener and no cache: there
the authorizer's context carries the principal (api/deps.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from uuid import UUID

from makima.domain.principals import Principal

MAX_ENTRIES = 10_000
MAX_AGE = 300.0


class PrincipalCache:
    """Thread-safe: requests read it on the event loop and store from the threadpool; the listener's
    thread forgets."""

    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._generation = 0
        self._live = False

    @property
    def live(self) -> bool:
        """Whether the cache answers (the revocation listener holds its LISTEN)."""
        return self._live

    def generation(self) -> int:
        """Read before a lookup's SELECT; passed back to ``remember``."""
        return self._generation

    def lookup(self, token_hash: bytes) -> Principal | None:
        """The cached principal of the token with this digest; None: look it up in the database."""
        if not self._live:
            return None
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None:
                return None
            principal, stored = entry
            if self._clock() - stored > self.max_age:
                del self._entries[token_hash]
                return None
            return principal

    def remember(self, token_hash: bytes, principal: Principal, generation: int) -> None:
        """Keep the principal the database just gave for this digest, unless a revocation (or a gap of
        the listener) happened since ``generation`` was read."""
        with self._lock:
            if not self._live or generation != self._generation:
                return
            self._entries[token_hash] = (principal, self._clock())
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, token_id: UUID) -> None:
        """The token was revoked: never answer its principal again."""
        with self._lock:
            self._generation += 1
            for key in [k for k, (p, _) in self._entries.items() if p.token_id == token_id]:
                del self._entries[key]

    def resume(self) -> None:
        """The listener holds its LISTEN again: answer from now on (starting empty: notices sent while it
        was down are lost)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._live = True

    def suspend(self) -> None:
        """The listener lost its connection: answer nothing, keep nothing, until ``resume``."""
        with self._lock:
            self._live = False
            self._generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
