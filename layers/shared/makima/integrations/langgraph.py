"""A LangGraph checkpointer backed by makima (issue 18): ``MakimaCheckpointSaver`` (sync) and
``AsyncMakimaCheckpointSaver`` (asyncio, ``httpx.AsyncClient``), over ``/api/v1/checkpoints``.

    from makima.integrations.langgraph import MakimaCheckpointSaver

    with MakimaCheckpointSaver(api_url="http://127.0.0.1:8000", token=token) as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke(inputs, {"configurable": {"thread_id": "t-1", "contract_id": contract_id}})

Checkpoints are serialised by the saver's ``serde`` (LangGraph's ``JsonPlusSerializer`` by default)
and stored whole, as the serde's ``(type, bytes)``; the server never reads them. Threads belong to the
token's owner (a daemon token's user): another owner's token sees none of them.

A config that names ``configurable.contract_id`` binds the thread to that contract: the first call of
this saver instance that names it makes the saver the contract's supervisor (``POST
/checkpoints/bind``: a supervisor is started when the contract has none, otherwise the existing one
is restored under a new generation), and every checkpoint and write it then stores is also that
supervisor's heartbeat. When another saver instance binds the contract later, this one's writes are
refused with ``Superseded`` (409 ``CONFLICT``): the process that was replaced must stop.

Both classes implement every method, sync and async (the sync saver's ``a*`` methods speak asyncio
too, and the async saver's sync ones use a blocking client), so either works in ``invoke`` and
``ainvoke``. Errors are the SDK's (``makima.client.api``): ``ApiError`` with the API's code, retried
as its ``RetryPolicy`` says (a connection that could not be made, 503, 429); a checkpoint over the
server's cap is ``ApiError`` 413 ``PAYLOAD_TOO_LARGE``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import threading
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

__all__ = ["AsyncMakimaCheckpointSaver", "MakimaCheckpointSaver"]

JSON = dict[str, Any]
# Checkpoints per page when list() follows the server's pages (the server also bounds a page by bytes).
PAGE_SIZE = 100


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

    def __init__(self, base_url: str, token: str | None, *, timeout: float, retry: RetryPolicy) -> None:
        self.base_url = base_url
        self.retry = retry
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

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
    ) -> None:
        super().__init__(serde=serde)
        self.api_url = api_url
        self.retry = retry or RetryPolicy()
        self.page_size = page_size
        self._timeout = timeout
        self._token = token
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
            self._sync = MakimaApi(self.api_url, self._token, timeout=self._timeout, retry=self.retry)
        return self._sync

    @property
    def aapi(self) -> _AsyncApi:
        if self._async is None:
            self._async = _AsyncApi(self.api.base_url, self._token, timeout=self._timeout, retry=self.retry)
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
        return {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": config["configurable"]["checkpoint_id"],
            "task_id": task_id,
            "task_path": task_path,
            "writes": items,
        }

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
            pending_writes=[
                (w["task_id"], w["channel"], self.serde.loads_typed((w["type"], _unb64(w["value"]))))
                for w in item["pending_writes"]
            ],
        )

    def _page_size(self, limit: int | None, seen: int) -> int:
        return self.page_size if limit is None else max(1, min(self.page_size, limit - seen))

    # --- sync ------------------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        self._supervision(config)
        try:
            item = self._call("GET", "/checkpoints/tuple", params=self._tuple_params(config))
        except ApiError as exc:
            if exc.status == 404 and exc.code == "NOT_FOUND":
                return None
            raise
        return self._tuple(item)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Newest first; the server's pages are fetched as the checkpoints are consumed."""
        self._supervision(config)
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
        await self._asupervision(config)
        try:
            item = await self._acall("GET", "/checkpoints/tuple", params=self._tuple_params(config))
        except ApiError as exc:
            if exc.status == 404 and exc.code == "NOT_FOUND":
                return None
            raise
        return self._tuple(item)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        await self._asupervision(config)
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
