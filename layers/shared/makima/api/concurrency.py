"""Running blocking service calls from ``async def`` endpoints.

A long-lived server (the local stack) must not block its event loop: blocking calls go to a pool of
threads. A Lambda container serves one event at a time, so there is nothing to overlap with, and the
hand-off is pure cost (Mangum's event loop ends worker threads with each invocation, so it even starts a
new thread per request): ``make_http_handler`` switches to calling inline.

The pool is a plain ``ThreadPoolExecutor`` handed the call by the event loop's ``run_in_executor``, not
anyio's ``to_thread`` (Starlette's ``run_in_threadpool``): anyio looks its backend, current task,
capacity limiter and worker queue up again on every call, which was a fifth of a heartbeat's server CPU
on the event loop's side (docs/performance.md, "Change 17"). What anyio gave is kept: the call runs in
a copy of the caller's context (its context variables), and at most ``MAX_THREADS`` run at once (anyio's
default limit). One difference: a caller cancelled while its call runs stops waiting at once, where
anyio waited for the thread; the call itself finishes either way (a thread cannot be interrupted), and
the server cancels no request while serving it (uvicorn waits for the running ones on shutdown).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MAX_THREADS = 40

_inline = False
_pool: ThreadPoolExecutor | None = None


def call_inline() -> None:
    """From now on, in this process, run blocking calls on the caller's thread (Lambda containers)."""
    global _inline
    _inline = True


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="makima-blocking")
    return _pool


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    if _inline:
        return fn(*args, **kwargs)
    call = functools.partial(fn, *args, **kwargs)
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_executor(), context.run, call)
