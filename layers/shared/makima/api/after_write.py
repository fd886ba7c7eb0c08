"""ASGI middleware that hands the outbox to the event pipeline once a request that may have written
events is done (its transaction committed before the response was sent).

Reads never write events, so GET/HEAD/OPTIONS are skipped, and so are requests whose endpoint handed
its events to the sink itself (``HANDLED`` in ``request.state``: the heartbeat endpoints) and writes that
logged no event (``db/events.py: watching``: most state saves; a drain that would find nothing). A failing
pipeline is logged and never turns a successful write into an error: the sweeper publishes what is left.
A sink that only wakes its own publisher (``committed_blocks`` false: the local stack's pump) is told on
the event loop, without a threadpool hop.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from makima.api.concurrency import blocking
from makima.db import events as events_sql
from makima.services.monitor import EventSink

log = logging.getLogger("makima.events")

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
HANDLED = "events_handled"


class PublishAfterWrite:
    def __init__(self, app: ASGIApp, events: EventSink) -> None:
        self.app = app
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in _READS:
            await self.app(scope, receive, send)
            return
        with events_sql.watching() as logged:
            await self.app(scope, receive, send)
        if (scope.get("state") or {}).get(HANDLED) or not logged():
            return
        try:
            if self.events.committed_blocks:
                await blocking(self.events.committed)
            else:
                self.events.committed()
        except Exception:
            log.exception("publishing events after a write failed; the sweeper will retry")
