"""Running blocking service calls from ``async def`` endpoints.

A long-lived server (the local stack) must not block its event loop: blocking calls go to the
threadpool. A Lambda container serves one event at a time, so there is nothing to overlap with, and the
threadpool hand-off is pure cost (Mangum's event loop ends anyio's worker threads with each invocation,
so it even starts a new thread per request): ``make_http_handler`` switches to calling inline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")

_inline = False


def call_inline() -> None:
    """From now on, in this process, run blocking calls on the caller's thread (Lambda containers)."""
    global _inline
    _inline = True


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    if _inline:
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)
