"""The HTTP client daemons and supervisors use: one method per endpoint they need, retries with
exponential backoff and jitter where a retry is safe, and every API error surfaced as ``ApiError``
carrying the API's error code.

What is retried, and why it is safe:

- a connection that could not be made (refused, DNS, connect timeout, no pooled connection): the request
  never reached the server, whatever its method;
- ``503`` (``DATABASE_UNAVAILABLE``: the service says "retry with backoff") and ``429`` (throttled): a
  request that fails changes nothing (every operation is one transaction), so even a POST may be resent.
  ``Retry-After`` is honoured. ``503 SUPERVISOR_DEAD`` is not transient and is not retried;
- a connection that broke after the request was sent (read timeout, reset, protocol error): for
  idempotent methods (GET, PUT, DELETE), and for the creating POSTs (``replayable``: contract, task,
  question, daemon, supervisor, user), which the API runs once per ``Idempotency-Key``. Another POST that
  may have been applied is not resent blindly: the caller decides (the reference supervisor re-reads
  the contract and carries on from what it finds);
- ``409 IDEMPOTENCY_IN_PROGRESS``: an earlier attempt of this very request is still running; the retry
  gets its answer once it is stored.

Every POST carries an ``Idempotency-Key`` (a fresh UUID per call of ``request``, the same on each of its
retries): a 503 can follow a commit (the connection lost after it), and the retry of a creating POST
then gets the first attempt's answer (``Idempotent-Replayed: true``) instead of creating a second object.

Never retried: any other 4xx (the request is wrong, resending it will not help) and 5xx other than 503.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger("makima.client")

JSON = dict[str, Any]
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 503})
NOT_TRANSIENT_CODES = frozenset({"SUPERVISOR_DEAD"})
# Transient whatever their status: another attempt of the same request is running.
TRANSIENT_CODES = frozenset({"IDEMPOTENCY_IN_PROGRESS"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Items per page when the SDK follows a list's cursor to its end (the lists allow up to 500).
PAGE_SIZE = 200

# Raised before anything was sent: always safe to retry.
_NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Raised after the request may have reached the server: safe to retry only when idempotent.
_MAYBE_SENT: tuple[type[Exception], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


class ApiError(Exception):
    """An error answer of the API (``{"error": {"code", "message", "details"}}``), or ``UNREACHABLE``
    (status 0) when the server could not be reached after the retries."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            err = response.json()["error"]
            return cls(response.status_code, str(err["code"]), str(err["message"]), err.get("details") or {})
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, f"HTTP_{response.status_code}", response.text[:500] or "no body")


class ApiUnreachable(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(0, "UNREACHABLE", message)


class StaleSave(ApiError):
    """``409 CONFLICT`` on a state save: ``reason`` is ``superseded`` (an older generation: this
    supervisor was restored elsewhere) or ``stale_sequence`` (a seq not above the last accepted)."""

    @property
    def reason(self) -> str:
        return str(self.details.get("reason", ""))


class Superseded(StaleSave):
    """This supervisor was restored elsewhere under a newer generation: stop, save nothing more."""


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1 = no retry). The n-th retry waits a random time in
    [delay/2, delay] with delay = min(max_delay, base_delay * 2**(n-1)) ("equal jitter": spread out, never
    immediate); a ``Retry-After`` header, when present, is waited instead (up to ``max_delay``)."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_delay))
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, retry - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(attempts=1)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: rare from API gateways; fall back to our own backoff


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class MakimaApi:
    """A synchronous client of ``/api/v1``. Thread-safe (one ``httpx.Client``, shared)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.endswith("/api/v1"):
            base = f"{base}/api/v1"
        self.base_url = base
        self.retry = retry or RetryPolicy()
        self.stats = Stats()
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base, headers=headers, timeout=timeout, transport=transport)

    def with_token(self, token: str) -> MakimaApi:
        """The same server as another principal (e.g. a daemon token minted for a user)."""
        return MakimaApi(self.base_url, token, timeout=self.http.timeout.read or 30.0, retry=self.retry)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> MakimaApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- the one place requests are made ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        replayable: bool = False,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send, retrying what is safe to retry; the decoded JSON body (None for 204), or ``ApiError``.

        A POST carries ``idempotency_key`` (default: a fresh UUID), the same on every attempt.
        ``replayable``: the route honours the key, so even a POST whose answer was lost is resent."""
        policy = retry or self.retry
        method = method.upper()
        headers: dict[str, str] | None = None
        if method == "POST":
            headers = {IDEMPOTENCY_HEADER: idempotency_key or str(uuid.uuid4())}
        attempt = 0
        while True:
            attempt += 1
            self.stats.requests += 1
            wait: float | None = None
            try:
                response = self.http.request(method, path, json=json, params=params, headers=headers)
            except _NOT_SENT as exc:
                if attempt >= policy.attempts:
                    raise ApiUnreachable(f"cannot reach {self.base_url}: {exc!r}") from exc
                reason = type(exc).__name__
            except _MAYBE_SENT as exc:
                if (method not in IDEMPOTENT_METHODS and not replayable) or attempt >= policy.attempts:
                    raise ApiUnreachable(f"{method} {path}: connection lost: {exc!r}") from exc
                reason = type(exc).__name__
            else:
                if response.status_code < 400:
                    if response.status_code == 204 or not response.content:
                        return None
                    return response.json()
                error = ApiError.from_response(response)
                transient = error.code in TRANSIENT_CODES or (
                    response.status_code in RETRY_STATUSES and error.code not in NOT_TRANSIENT_CODES
                )
                if not transient or attempt >= policy.attempts:
                    raise error
                reason = error.code
                wait = _retry_after(response)
            delay = policy.delay(attempt, wait)
            self.stats.retries += 1
            self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
            log.debug("%s %s: %s, retry %d in %.2fs", method, path, reason, attempt, delay)
            self._sleep(delay)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any = None, *, replayable: bool = False) -> Any:
        """``replayable``: a creating POST, which the API runs once per ``Idempotency-Key``."""
        return self.request("POST", path, json=body, replayable=replayable)

    def pages(self, path: str, key: str, *, page_size: int | None = None, **params: Any) -> Iterator[JSON]:
        """Every item of a paged list (``limit`` + ``cursor``), following ``next_cursor`` to its end; the
        pages are fetched as the items are consumed."""
        cursor: str | None = None
        while True:
            page = self.get(path, **params, limit=page_size or PAGE_SIZE, cursor=cursor)
            yield from page[key]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def every(self, path: str, key: str, **params: Any) -> list[JSON]:
        return list(self.pages(path, key, **params))

    # --- health ---------------------------------------------------------------------------------------

    def health(self) -> JSON:
        return dict(self.request("GET", "/health", retry=NO_RETRY))

    def wait_healthy(self, timeout: float = 60.0, interval: float = 0.25) -> None:
        """Block until ``GET /health`` answers 200 (e.g. right after starting the stack)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except ApiError as exc:
                if time.monotonic() >= deadline:
                    raise ApiUnreachable(f"{self.base_url} not healthy after {timeout:.0f}s: {exc}") from exc
            self._sleep(interval)

    # --- users and tokens (admin) ---------------------------------------------------------------------

    def create_user(self, name: str, role: str = "user") -> JSON:
        return dict(self.post("/users", {"name": name, "role": role}, replayable=True))

    def issue_token(self, user_id: str, *, kind: str = "user", name: str = "") -> JSON:
        return dict(self.post(f"/users/{user_id}/tokens", {"kind": kind, "name": name}))

    def users(self) -> list[JSON]:
        """All users (every page; admins only)."""
        return self.every("/users", "users")

    def tokens(self, user_id: str) -> list[JSON]:
        """All the user's tokens (every page)."""
        return self.every(f"/users/{user_id}/tokens", "tokens")

    # --- contracts ------------------------------------------------------------------------------------

    def contract_types(self) -> list[JSON]:
        """All contract types (every page)."""
        return self.every("/contract-types", "contract_types")

    def contract_type(self, name: str) -> JSON:
        """``{name, phases: [{id, name, deliverables: [{id, name}], ...}], ...}``."""
        return dict(self.get(f"/contract-types/{name}"))

    def create_contract(self, name: str, *, contract_type: str = "simple", **fields: Any) -> JSON:
        return dict(self.post("/contracts", {"name": name, "contract_type": contract_type, **fields}, replayable=True))

    def contract(self, contract_id: str) -> JSON:
        """The contract with ``phases`` (ids, in order) and the current phase's ``deliverables``."""
        return dict(self.get(f"/contracts/{contract_id}"))

    def deliverables(self, contract_id: str) -> JSON:
        return dict(self.get(f"/contracts/{contract_id}/deliverables"))

    def complete_deliverable(
        self, contract_id: str, deliverable_id: str, *, phase: str | None = None, expected_version: int | None = None
    ) -> JSON:
        """``expected_version``: the version the caller decided on (VERSION_CONFLICT if it moved)."""
        body: JSON = {"deliverable_id": deliverable_id}
        if phase:
            body["phase"] = phase
        if expected_version is not None:
            body["expected_version"] = expected_version
        return dict(self.post(f"/contracts/{contract_id}/deliverables", body))

    def phase_readiness(self, contract_id: str) -> JSON:
        return dict(self.get(f"/contracts/{contract_id}/phase-readiness"))

    def change_phase(
        self, contract_id: str, phase: str, *, expected_version: int, confirmed: bool = False, force: bool = False
    ) -> JSON:
        """``force`` (people only) moves past unmet phase requirements; refused for daemon tokens."""
        body = {"phase": phase, "expected_version": expected_version, "confirmed": confirmed, "force": force}
        return dict(self.post(f"/contracts/{contract_id}/phase", body))

    def change_status(self, contract_id: str, status: str, *, reason: str | None = None) -> JSON:
        return dict(self.post(f"/contracts/{contract_id}/status", {"status": status, "reason": reason}))

    def check_completion(
        self, contract_id: str, *, confirmed: bool = False, expected_version: int | None = None
    ) -> JSON:
        body: JSON = {"confirmed": confirmed}
        if expected_version is not None:
            body["expected_version"] = expected_version
        return dict(self.post(f"/contracts/{contract_id}/check-completion", body))

    def set_auto_complete(self, contract_id: str, enabled: bool, *, expected_version: int | None = None) -> JSON:
        body: JSON = {"enabled": enabled}
        if expected_version is not None:
            body["expected_version"] = expected_version
        return dict(self.request("PUT", f"/contracts/{contract_id}/auto-complete", json=body))

    def events(self, contract_id: str, *, after_id: int | None = None, limit: int = 1000) -> JSON:
        return dict(self.get(f"/contracts/{contract_id}/events", after_id=after_id, limit=limit))

    # --- tasks ----------------------------------------------------------------------------------------

    def tasks(self, contract_id: str) -> list[JSON]:
        """All the contract's tasks (every page)."""
        return self.every(f"/contracts/{contract_id}/tasks", "tasks")

    def spawn_task(self, contract_id: str, name: str) -> JSON:
        return dict(self.post(f"/contracts/{contract_id}/tasks", {"name": name}, replayable=True))

    def set_task_status(self, contract_id: str, task_id: str, status: str, *, error: str | None = None) -> JSON:
        body: JSON = {"status": status}
        if error is not None:
            body["error"] = error
        return dict(self.post(f"/contracts/{contract_id}/tasks/{task_id}/status", body))

    # --- questions ------------------------------------------------------------------------------------

    def ask_question(self, contract_id: str, question: str, *, task_id: str | None = None) -> JSON:
        body: JSON = {"question": question}
        if task_id:
            body["task_id"] = task_id
        return dict(self.post(f"/contracts/{contract_id}/questions", body, replayable=True))

    def questions(self, contract_id: str, *, status: str | None = None, undelivered: bool = False) -> list[JSON]:
        """All the contract's questions of that status (every page)."""
        return self.every(
            f"/contracts/{contract_id}/questions", "questions", status=status, undelivered=undelivered or None
        )

    def messages(self, contract_id: str) -> list[JSON]:
        """All the contract's chat messages (every page)."""
        return self.every(f"/contracts/{contract_id}/messages", "messages")

    def answer_question(
        self, contract_id: str, question_id: str, answer: str, *, expected_version: int | None = None
    ) -> JSON:
        body: JSON = {"answer": answer}
        if expected_version is not None:
            body["expected_version"] = expected_version
        return dict(self.post(f"/contracts/{contract_id}/questions/{question_id}/answer", body))

    def acknowledge_answer(self, contract_id: str, question_id: str) -> JSON:
        return dict(self.post(f"/contracts/{contract_id}/questions/{question_id}/ack"))

    # --- daemons --------------------------------------------------------------------------------------

    def register_daemon(self, name: str, *, hostname: str = "", capacity: int = 1) -> JSON:
        return dict(self.post("/daemons", {"name": name, "hostname": hostname, "capacity": capacity}, replayable=True))

    def daemon_heartbeat(self, daemon_id: str, worktrees: Sequence[Mapping[str, Any]] | None = None) -> JSON:
        body: JSON = {} if worktrees is None else {"worktrees": [dict(w) for w in worktrees]}
        return dict(self.post(f"/daemons/{daemon_id}/heartbeat", body))

    def worktrees(self, daemon_id: str) -> list[JSON]:
        """All the worktrees the service knows of the daemon (every page)."""
        return self.every(f"/daemons/{daemon_id}/worktrees", "worktrees")

    def worktrees_removed(self, daemon_id: str, paths: Sequence[str]) -> JSON:
        return dict(self.post(f"/daemons/{daemon_id}/worktrees/removed", {"paths": list(paths)}))

    def reassignable_tasks(self, limit: int = 100) -> list[JSON]:
        """The oldest ``limit`` adoptable tasks (one page: a daemon takes what it has room for)."""
        return list(self.get("/tasks/reassignable", limit=limit)["tasks"])

    def claim_task(self, task_id: str, daemon_id: str) -> JSON:
        return dict(self.post(f"/tasks/{task_id}/claim", {"daemon_id": daemon_id}))

    # --- supervisors ----------------------------------------------------------------------------------

    def start_supervisor(self, contract_id: str, *, daemon_id: str | None = None, name: str = "supervisor") -> JSON:
        body: JSON = {"name": name}
        if daemon_id:
            body["daemon_id"] = daemon_id
        return dict(self.post(f"/contracts/{contract_id}/supervisor", body, replayable=True))

    def supervisor_status(self, contract_id: str) -> JSON:
        return dict(self.get(f"/contracts/{contract_id}/supervisor/status"))

    def supervisor_heartbeat(self, contract_id: str, message: Mapping[str, Any]) -> JSON:
        return dict(self.post(f"/contracts/{contract_id}/supervisor/heartbeat", dict(message)))

    def heartbeat_batch(self, messages: Sequence[Mapping[str, Any]], *, daemon_id: str | None = None) -> JSON:
        body: JSON = {"heartbeats": [dict(m) for m in messages]}
        if daemon_id:
            body["daemon_id"] = daemon_id
        return dict(self.post("/supervisors/heartbeats", body))

    def heartbeat_history(self, contract_id: str, limit: int = 10) -> list[JSON]:
        return list(self.get(f"/contracts/{contract_id}/supervisor/heartbeats", limit=limit)["heartbeats"])

    def request_sync(self, contract_id: str, *, wait_seconds: float = 0.0) -> JSON:
        return dict(self.post(f"/contracts/{contract_id}/supervisor/sync", {"wait_seconds": wait_seconds}))

    def request_restart(
        self, contract_id: str, *, reason: str | None = None, expected_version: int | None = None
    ) -> JSON:
        body: JSON = {}
        if reason:
            body["reason"] = reason
        if expected_version is not None:
            body["expected_version"] = expected_version
        return dict(self.post(f"/contracts/{contract_id}/supervisor/restart", body))

    def state_page(self, contract_id: str, *, after_seq: int | None = None) -> JSON:
        """One answer of ``GET …/supervisor/state``: the state and one page of its conversation."""
        params = {} if after_seq is None else {"after_seq": after_seq}
        return dict(self.get(f"/contracts/{contract_id}/supervisor/state", **params))

    def get_state(self, contract_id: str) -> JSON:
        """The persisted state with its whole kept conversation: the pages the service answers one at a
        time (``next_after_seq``) followed and joined, so the result's ``next_after_seq`` is None. A
        save that compacts or a restore between two pages makes it start over (a few times at most)."""
        for _ in range(CONSISTENT_READ_ATTEMPTS):
            first = self.state_page(contract_id)
            joined = _follow(self, contract_id, first, generation=None)
            if joined is not None:
                return joined
        raise ApiError(409, "CONFLICT", "the supervisor's state kept changing while it was read")

    def save_state(self, contract_id: str, body: Mapping[str, Any]) -> JSON:
        """``PUT …/supervisor/state``; a stale save raises ``StaleSave`` (``Superseded`` for an older
        generation)."""
        try:
            return dict(self.request("PUT", f"/contracts/{contract_id}/supervisor/state", json=dict(body)))
        except ApiError as exc:
            if exc.status == 409:
                kind = Superseded if exc.details.get("reason") == "superseded" else StaleSave
                raise kind(exc.status, exc.code, exc.message, exc.details) from exc
            raise

    def restore(self, contract_id: str, *, daemon_id: str | None = None) -> JSON:
        """``POST …/supervisor/restore``, then the rest of the kept conversation (the answer carries its
        first page) from ``GET …/supervisor/state?after_seq=``: the result holds all of it. Raises
        ``Superseded`` when another restore took the supervisor over meanwhile."""
        body: JSON = {"daemon_id": daemon_id} if daemon_id else {}
        restored = dict(self.post(f"/contracts/{contract_id}/supervisor/restore", body))
        joined = _follow(self, contract_id, restored, generation=int(restored["generation"]))
        if joined is None:
            raise Superseded(409, "CONFLICT", "the supervisor was restored again while its conversation was read", {})
        return joined


CONSISTENT_READ_ATTEMPTS = 3


def _follow(api: MakimaApi, contract_id: str, first: JSON, *, generation: int | None) -> JSON | None:
    """``first`` (a state or restore answer) with the rest of its conversation appended, page by page.
    None when the pages do not join up: a later page from another generation (when ``generation`` is
    given, or the first page's otherwise), or one whose kept conversation starts past the cursor (a
    save compacted the messages between)."""
    joined = dict(first)
    history = list(first["conversation_history"])
    expected = generation if generation is not None else int(first["generation"])
    cursor = first.get("next_after_seq")
    while cursor is not None:
        page = api.state_page(contract_id, after_seq=int(cursor))
        if int(page["generation"]) != expected or int(page["conversation_start"]) > int(cursor) + 1:
            return None
        history.extend(page["conversation_history"])
        following = page.get("next_after_seq")
        if following is not None and int(following) <= int(cursor):
            return None  # a cursor that does not move on would never end
        cursor = following
        if generation is None:
            # A read of the state: its other fields as of the last page, which the messages reach.
            joined = {**page}
    joined["conversation_history"] = history
    joined["next_after_seq"] = None
    return joined
