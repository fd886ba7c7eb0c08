"""A LangGraph checkpointer backed by makima (issue 18): ``MakimaCheckpointSaver`` (sync) and
``AsyncMakimaCheckpointSaver`` (asyncio, ``httpx.AsyncClient``), over ``/api/v1/checkpoints``.

    from makima.integrations.langgraph import MakimaCheckpointSaver

    with MakimaCheckpointSaver(api_url="http://127.0.0.1:8000", token=token) as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke(inputs, {"configurable": {"thread_id": "t-1", "contract_id": contract_id}})

Checkpoints are serialised by the saver's ``serde`` (LangGraph's ``JsonPlusSerializer`` by default)
and stored whole, as the serde's ``(type, bytes)``; the server never reads them. Threads belong to the
token's owner (a daemon token's user): another owner's token sees none of them.

A config that names ``configurable.contract_id`` binds the thread to that contract: the first write
(checkpoint or pending writes) of this saver instance that names it makes the saver the contract's
supervisor (``POST /checkpoints/bind``: a supervisor is started when the contract has none, otherwise
the existing one is restored under a new generation), and every checkpoint and write it then stores is
also that supervisor's heartbeat. Reads never bind: a process that only inspects a thread
(``get_state``, ``list``) does not take the contract over from the one running it. When another saver
instance binds the contract later, this one's writes are refused with ``Superseded`` (409
``CONFLICT``): the process that was replaced must stop.

Both classes implement every method, sync and async (the sync saver's ``a*`` methods speak asyncio
too, and the async saver's sync ones use a blocking client), so either works in ``invoke`` and
``ainvoke``. Errors are the SDK's (``makima.client.api``): ``ApiError`` with the API's code, retried
as its ``RetryPolicy`` says (a connection that could not be made, 503, 429); a checkpoint over the
server's cap is ``ApiError`` 413 ``PAYLOAD_TOO_LARGE``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Self

import httpx
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from makima.client.api import (
    _MAYBE_SENT,
    _NOT_SENT,
    IDEMPOTENCY_HEADER,
    IDEMPOTENT_METHODS,
    NOT_TRANSIENT_CODES,
    RETRY_STATUSES,
    TRANSIENT_CODES,
    ApiError,
    ApiUnreachable,
    MakimaApi,
    RetryPolicy,
    Superseded,
    _retry_after,
)

__all__ = ["AsyncMakimaCheckpointSaver", "MakimaCheckpointSaver", "interrupt_question"]

JSON = dict[str, Any]
# Checkpoints per page when list() follows the server's pages (the server also bounds a page by bytes).
PAGE_SIZE = 100
# LangGraph's channels (langgraph._internal._constants): a task that stopped, and the values it was
# resumed with (a list per task, one per interrupt() it passed, in order).
INTERRUPT = "__interrupt__"
RESUME = "__resume__"
# The task id of a run's own writes (a Command's), not a task's.
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"
# A question's bound (POST /contracts/{id}/questions) and the keys a dict interrupt value names it by.
MAX_QUESTION_CHARS = 10_000
MAX_ANSWER_CHARS = 100_000
QUESTION_KEYS = ("question", "text", "message")


def _text(value: Any) -> str:
    """A value as text: a str as is, anything else as compact JSON (its repr when JSON cannot say it)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).replace("\x00", "")
    except (TypeError, ValueError):
        return repr(value).replace("\x00", "")


def resume_answer(value: Any) -> str:
    """The answer recorded for an interrupt the graph's own code resumed (``Command(resume=value)``):
    the value as text (``_text``), never empty, at most ``MAX_ANSWER_CHARS``."""
    text = _text(value) or '""'
    return text if len(text) <= MAX_ANSWER_CHARS else text[: MAX_ANSWER_CHARS - 1] + "\u2026"


def interrupt_question(value: Any) -> str:
    """The question the owner is asked for an ``interrupt(value)``: a str as is; a mapping's
    ``question``, ``text`` or ``message`` (the first that is a non-empty str); anything else as compact
    JSON. Without NUL, never empty, at most ``MAX_QUESTION_CHARS``."""
    named = None
    if isinstance(value, Mapping):
        named = next((v for k in QUESTION_KEYS if isinstance(v := value.get(k), str) and v.strip()), None)
    text = _text(value if named is None else named)
    if not text.strip():
        text = "(the graph stopped for input)"
    return text if len(text) <= MAX_QUESTION_CHARS else text[: MAX_QUESTION_CHARS - 1] + "\u2026"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _superseded(error: ApiError) -> ApiError:
    """A refused write of a replaced supervisor as the SDK's ``Superseded``; any other error as is."""
    if error.status == 409 and error.details.get("reason") == "superseded":
        return Superseded(error.status, error.code, error.message, error.details)
    return error


class _AsyncApi:
    """The async twin of ``MakimaApi.request``: the same retry policy and error mapping (module
    docstring of ``makima.client.api``), over ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.retry = retry
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None, replayable: bool
    ) -> Any:
        policy = self.retry
        headers = {IDEMPOTENCY_HEADER: str(uuid.uuid4())} if method == "POST" else None
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = await self.http.request(method, path, json=json, params=params, headers=headers)
            except _NOT_SENT as exc:
                if attempt >= policy.attempts:
                    raise ApiUnreachable(f"cannot reach {self.base_url}: {exc!r}") from exc
            except _MAYBE_SENT as exc:
                if (method not in IDEMPOTENT_METHODS and not replayable) or attempt >= policy.attempts:
                    raise ApiUnreachable(f"{method} {path}: connection lost: {exc!r}") from exc
            else:
                if response.status_code < 400:
                    return None if response.status_code == 204 or not response.content else response.json()
                error = ApiError.from_response(response)
                transient = error.code in TRANSIENT_CODES or (
                    response.status_code in RETRY_STATUSES and error.code not in NOT_TRANSIENT_CODES
                )
                if not transient or attempt >= policy.attempts:
                    raise error
                wait = _retry_after(response)
            await asyncio.sleep(policy.delay(attempt, wait))


class _MakimaSaver(BaseCheckpointSaver[str]):
    """What both savers share: the request bodies, the answers' decoding, both transports."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        serde: SerializerProtocol | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        page_size: int = PAGE_SIZE,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport``/``async_transport``: httpx's, for a proxy or a test (default: the network)."""
        super().__init__(serde=serde)
        self.api_url = api_url
        self.retry = retry or RetryPolicy()
        self.page_size = page_size
        self._timeout = timeout
        self._token = token
        self._transport = transport
        self._async_transport = async_transport
        self._sync: MakimaApi | None = None
        self._async: _AsyncApi | None = None
        # contract id -> the generation this saver holds it as (bound once per instance)
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """From ``MAKIMA_API_URL`` (default ``http://127.0.0.1:8000``) and ``MAKIMA_TOKEN``."""
        token = os.environ.get("MAKIMA_TOKEN")
        if not token:
            raise ValueError("MAKIMA_TOKEN is not set")
        return cls(api_url=os.environ.get("MAKIMA_API_URL", "http://127.0.0.1:8000"), token=token, **kwargs)

    # --- transports ---------------------------------------------------------------------------------

    @property
    def api(self) -> MakimaApi:
        if self._sync is None:
            self._sync = MakimaApi(
                self.api_url, self._token, timeout=self._timeout, retry=self.retry, transport=self._transport
            )
        return self._sync

    @property
    def aapi(self) -> _AsyncApi:
        if self._async is None:
            self._async = _AsyncApi(
                self.api.base_url,
                self._token,
                timeout=self._timeout,
                retry=self.retry,
                transport=self._async_transport,
            )
        return self._async

    def _call(self, method: str, path: str, *, json: Any = None, params: Any = None, replayable: bool = False) -> Any:
        try:
            return self.api.request(method, path, json=json, params=params, replayable=replayable)
        except ApiError as exc:
            raise _superseded(exc) from None

    async def _acall(
        self, method: str, path: str, *, json: Any = None, params: Any = None, replayable: bool = False
    ) -> Any:
        try:
            return await self.aapi.request(method, path, json=json, params=params, replayable=replayable)
        except ApiError as exc:
            raise _superseded(exc) from None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()

    # --- contract binding --------------------------------------------------------------------------------

    @staticmethod
    def _contract_of(config: RunnableConfig | None) -> str | None:
        value = ((config or {}).get("configurable") or {}).get("contract_id")
        return str(value) if value else None

    def _supervision(self, config: RunnableConfig | None) -> JSON:
        contract_id = self._contract_of(config)
        if contract_id is None:
            return {}
        with self._lock:
            generation = self._generations.get(contract_id)
            if generation is None:
                answer = self._call("POST", "/checkpoints/bind", json={"contract_id": contract_id}, replayable=True)
                generation = self._generations[contract_id] = int(answer["generation"])
        return {"contract_id": contract_id, "generation": generation}

    async def _asupervision(self, config: RunnableConfig | None) -> JSON:
        contract_id = self._contract_of(config)
        if contract_id is None:
            return {}
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:  # one bind per contract, even when tasks touch the thread at once
            generation = self._generations.get(contract_id)
            if generation is None:
                answer = await self._acall(
                    "POST", "/checkpoints/bind", json={"contract_id": contract_id}, replayable=True
                )
                generation = self._generations[contract_id] = int(answer["generation"])
        return {"contract_id": contract_id, "generation": generation}

    # --- bodies and answers ------------------------------------------------------------------------------

    @staticmethod
    def _where(config: RunnableConfig) -> tuple[str, str]:
        configurable = config["configurable"]
        return str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", ""))

    def _put_body(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata) -> JSON:
        thread_id, ns = self._where(config)
        type_, data = self.serde.dumps_typed(checkpoint)
        return {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": config["configurable"].get("checkpoint_id"),
            "type": type_,
            "checkpoint": _b64(data),
            "metadata": get_serializable_checkpoint_metadata(config, metadata),
        }

    @staticmethod
    def _stored(config: RunnableConfig, checkpoint: Checkpoint) -> RunnableConfig:
        thread_id, ns = _MakimaSaver._where(config)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def _writes_body(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> JSON:
        thread_id, ns = self._where(config)
        items = []
        for i, (channel, value) in enumerate(writes):
            type_, data = self.serde.dumps_typed(value)
            items.append(
                {"idx": WRITES_IDX_MAP.get(channel, i), "channel": channel, "type": type_, "value": _b64(data)}
            )
        body: JSON = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": config["configurable"]["checkpoint_id"],
            "task_id": task_id,
            "task_path": task_path,
            "writes": items,
        }
        if self._contract_of(config) is not None:
            interrupts = self._interrupts(writes)
            if interrupts:
                body["interrupts"] = interrupts
            resumed = (
                next((v for c, v in writes if c == RESUME and isinstance(v, list)), None)
                if task_id != NULL_TASK_ID
                else None
            )
            if resumed:
                body["resumed"] = [resume_answer(v) for v in resumed]
        return body

    @staticmethod
    def _interrupts(writes: Sequence[tuple[str, Any]]) -> list[JSON]:
        """A bound thread's interrupts, as the server asks them: LangGraph's id and the question text
        (``interrupt_question``), read here from the values themselves, before the serde."""
        out: list[JSON] = []
        seen: set[str] = set()
        for channel, value in writes:
            if channel != INTERRUPT:
                continue
            for interrupt in value if isinstance(value, (list, tuple)) else [value]:
                interrupt_id = getattr(interrupt, "id", None)
                if isinstance(interrupt_id, str) and interrupt_id and interrupt_id not in seen:
                    seen.add(interrupt_id)
                    out.append(
                        {
                            "interrupt_id": interrupt_id,
                            "question": interrupt_question(getattr(interrupt, "value", None)),
                        }
                    )
        return out

    @staticmethod
    def _tuple_params(config: RunnableConfig) -> JSON:
        thread_id, ns = _MakimaSaver._where(config)
        params = {"thread_id": thread_id, "checkpoint_ns": ns}
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            params["checkpoint_id"] = checkpoint_id
        return params

    @staticmethod
    def _search_body(
        config: RunnableConfig | None, filter: dict[str, Any] | None, before: RunnableConfig | None
    ) -> JSON:
        body: JSON = {}
        configurable = (config or {}).get("configurable") or {}
        if "thread_id" in configurable:
            body["thread_id"] = str(configurable["thread_id"])
        if "checkpoint_ns" in configurable:
            body["checkpoint_ns"] = str(configurable["checkpoint_ns"])
        if configurable.get("checkpoint_id"):
            body["checkpoint_id"] = str(configurable["checkpoint_id"])
        if filter:
            body["filter"] = filter
        if before is not None and get_checkpoint_id(before):
            body["before"] = get_checkpoint_id(before)
        return body

    def _tuple(self, item: JSON) -> CheckpointTuple:
        where = {"thread_id": item["thread_id"], "checkpoint_ns": item["checkpoint_ns"]}
        parent = item.get("parent_checkpoint_id")
        return CheckpointTuple(
            config={"configurable": {**where, "checkpoint_id": item["checkpoint_id"]}},
            checkpoint=self.serde.loads_typed((item["type"], _unb64(item["checkpoint"]))),
            metadata=item["metadata"],
            parent_config={"configurable": {**where, "checkpoint_id": parent}} if parent else None,
            pending_writes=self._resumed(
                [
                    (w["task_id"], w["channel"], self.serde.loads_typed((w["type"], _unb64(w["value"]))))
                    for w in item["pending_writes"]
                ],
                item.get("interrupts") or [],
            ),
        )

    @staticmethod
    def _resumed(writes: list[tuple[str, str, Any]], asked: Sequence[JSON]) -> list[tuple[str, str, Any]]:
        """The pending writes with the owner's answers as LangGraph's own resume writes: a task stopped
        at an interrupt whose question is answered gets the answer appended to its RESUME list (the
        values its earlier ``interrupt()`` calls returned), exactly what ``Command(resume=...)`` leaves
        once the task took it, so ``interrupt()`` returns the answer when the task runs again."""
        answers = {a["interrupt_id"]: a["answer"] for a in asked if a.get("status") == "answered"}
        if not answers:
            return writes
        resume: dict[str, Any] = {}
        for task_id, channel, value in writes:
            if channel != INTERRUPT or task_id in resume:
                continue
            for interrupt in value if isinstance(value, (list, tuple)) else [value]:
                if getattr(interrupt, "id", None) in answers:
                    resume[task_id] = answers[interrupt.id]
                    break
        if not resume:
            return writes
        out: list[tuple[str, str, Any]] = []
        for task_id, channel, value in writes:
            if channel == RESUME and task_id in resume:
                earlier = value if isinstance(value, list) else [value]
                value = [*earlier, resume.pop(task_id)]
            out.append((task_id, channel, value))
        out.extend((task_id, RESUME, [answer]) for task_id, answer in resume.items())
        return out

    def _open_questions(self, item: JSON) -> list[str]:
        """The questions the checkpoint's interrupts still wait on: asked, not answered, and the
        interrupt still pending (its task did not run past it)."""
        stopped = {
            getattr(i, "id", None)
            for task_id, channel, value in self._tuple(item).pending_writes or []
            if channel == INTERRUPT
            for i in (value if isinstance(value, (list, tuple)) else [value])
        }
        return [
            a["question_id"]
            for a in item.get("interrupts") or []
            if a.get("status") != "answered" and a["interrupt_id"] in stopped
        ]

    def _tuple_item(self, config: RunnableConfig) -> JSON | None:
        try:
            item: JSON = self._call("GET", "/checkpoints/tuple", params=self._tuple_params(config))
        except ApiError as exc:
            if exc.status == 404 and exc.code == "NOT_FOUND":
                return None
            raise
        return item

    async def _atuple_item(self, config: RunnableConfig) -> JSON | None:
        try:
            item: JSON = await self._acall("GET", "/checkpoints/tuple", params=self._tuple_params(config))
        except ApiError as exc:
            if exc.status == 404 and exc.code == "NOT_FOUND":
                return None
            raise
        return item

    def wait_for_answers(
        self, config: RunnableConfig, *, timeout: float = 300.0, poll: float = 1.0, max_poll: float = 15.0
    ) -> bool:
        """Wait until the owner answered every question the thread's interrupts asked (True), or
        ``timeout`` seconds passed (False); True at once when none is open. Polls the thread's tuple,
        ``poll`` seconds first, doubling up to ``max_poll``. Then ``graph.invoke(None, config)``
        resumes the graph with the answers."""
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            item = self._tuple_item(config)
            if item is None or not self._open_questions(item):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, max_poll)

    async def await_answers(
        self, config: RunnableConfig, *, timeout: float = 300.0, poll: float = 1.0, max_poll: float = 15.0
    ) -> bool:
        """``wait_for_answers`` for asyncio."""
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            item = await self._atuple_item(config)
            if item is None or not self._open_questions(item):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, max_poll)

    def _page_size(self, limit: int | None, seen: int) -> int:
        return self.page_size if limit is None else max(1, min(self.page_size, limit - seen))

    # --- sync ------------------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        item = self._tuple_item(config)
        return None if item is None else self._tuple(item)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Newest first; the server's pages are fetched as the checkpoints are consumed."""
        body = self._search_body(config, filter, before)
        seen, cursor = 0, None
        while limit is None or seen < limit:
            page = self._call(
                "POST",
                "/checkpoints/search",
                json={**body, "limit": self._page_size(limit, seen), "cursor": cursor},
                replayable=True,
            )
            for item in page["checkpoints"]:
                seen += 1
                yield self._tuple(item)
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        body = {**self._put_body(config, checkpoint, metadata), **self._supervision(config)}
        self._call("PUT", "/checkpoints", json=body)
        return self._stored(config, checkpoint)

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        if not writes:
            return
        body = {**self._writes_body(config, writes, task_id, task_path), **self._supervision(config)}
        self._call("PUT", "/checkpoints/writes", json=body)

    def delete_thread(self, thread_id: str) -> None:
        self._call("DELETE", "/checkpoints", params={"thread_id": str(thread_id)})

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            self._call("POST", "/checkpoints/delete-runs", json={"run_ids": list(run_ids)}, replayable=True)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._call(
            "POST",
            "/checkpoints/copy",
            json={"source_thread_id": str(source_thread_id), "target_thread_id": str(target_thread_id)},
            replayable=True,
        )

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if thread_ids:
            self._call(
                "POST",
                "/checkpoints/prune",
                json={"thread_ids": [str(t) for t in thread_ids], "strategy": strategy},
                replayable=True,
            )

    # --- async -----------------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        item = await self._atuple_item(config)
        return None if item is None else self._tuple(item)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        body = self._search_body(config, filter, before)
        seen, cursor = 0, None
        while limit is None or seen < limit:
            page = await self._acall(
                "POST",
                "/checkpoints/search",
                json={**body, "limit": self._page_size(limit, seen), "cursor": cursor},
                replayable=True,
            )
            for item in page["checkpoints"]:
                seen += 1
                yield self._tuple(item)
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        body = {**self._put_body(config, checkpoint, metadata), **await self._asupervision(config)}
        await self._acall("PUT", "/checkpoints", json=body)
        return self._stored(config, checkpoint)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        if not writes:
            return
        body = {**self._writes_body(config, writes, task_id, task_path), **await self._asupervision(config)}
        await self._acall("PUT", "/checkpoints/writes", json=body)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._acall("DELETE", "/checkpoints", params={"thread_id": str(thread_id)})

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            await self._acall("POST", "/checkpoints/delete-runs", json={"run_ids": list(run_ids)}, replayable=True)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._acall(
            "POST",
            "/checkpoints/copy",
            json={"source_thread_id": str(source_thread_id), "target_thread_id": str(target_thread_id)},
            replayable=True,
        )

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if thread_ids:
            await self._acall(
                "POST",
                "/checkpoints/prune",
                json={"thread_ids": [str(t) for t in thread_ids], "strategy": strategy},
                replayable=True,
            )

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as LangGraph's own savers write them: a zero-padded counter, then a random
        fraction, so they compare as strings in order."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"  # noqa: S311 (an ordering tiebreak, no secret)


class MakimaCheckpointSaver(_MakimaSaver):
    """The synchronous saver (its ``a*`` methods work too). A context manager: ``with ... as saver``."""

    def __enter__(self) -> MakimaCheckpointSaver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncMakimaCheckpointSaver(_MakimaSaver):
    """The asyncio saver (``httpx.AsyncClient``; its sync methods work too). ``async with ... as saver``."""

    async def __aenter__(self) -> AsyncMakimaCheckpointSaver:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def __enter__(self) -> AsyncMakimaCheckpointSaver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
