"""The client SDK (``makima.client``) against a real server: the FastAPI app under uvicorn on a free
local port, over the real test database. Retries are shown against real failures: a port nobody
listens on yet, the database made unreachable (503 DATABASE_UNAVAILABLE), and a small local HTTP
server for 429 and for a connection that dies after the request was sent."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from makima.api.app import create_app
from makima.client import ApiError, ApiUnreachable, MakimaApi, RetryPolicy, StaleSave, Superseded
from makima.client.daemon import Daemon
from makima.client.heartbeat import HeartbeatLoop
from makima.client.reference import ReferenceConfig, ReferenceSupervisor
from makima.client.session import SupervisorSession
from makima.db.connection import PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.supervisors import SavePoint, SupervisorState
from makima.services import auth
from tests.conftest import Caller, set_database_reachable
from tests.integration.live import LiveServer, free_port

pytestmark = pytest.mark.integration
FAST = RetryPolicy(attempts=8, base_delay=0.05, max_delay=0.5)


@pytest.fixture
def owner(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller()


@pytest.fixture
def api(live: LiveServer, owner: Caller) -> Iterator[MakimaApi]:
    with MakimaApi(live.url, owner.token, retry=FAST) as client:
        yield client


@pytest.fixture
def daemon_api(live: LiveServer, owner: Caller, make_caller: Callable[..., Caller]) -> Iterator[MakimaApi]:
    with MakimaApi(live.url, make_caller(daemon_for=owner).token, retry=FAST) as client:
        yield client


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")


# --- errors and retries -----------------------------------------------------------------------------------


def test_api_errors_carry_the_code_and_4xx_is_never_retried(api: MakimaApi) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(ApiError) as caught:
        api.contract(missing)
    assert (caught.value.status, caught.value.code) == (404, "CONTRACT_NOT_FOUND")
    assert caught.value.details == {"contract_id": missing}
    c = api.create_contract("errors")
    with pytest.raises(ApiError) as caught:
        api.complete_deliverable(c["id"], "no-such-deliverable")
    assert (caught.value.status, caught.value.code) == (400, "INVALID_DELIVERABLE")
    assert "plan-document" in caught.value.details["valid_deliverables"]
    with pytest.raises(ApiError) as caught:
        api.request("POST", f"/contracts/{c['id']}/tasks", json={"name": ""})
    assert (caught.value.status, caught.value.code) == (422, "INVALID_REQUEST")
    assert (api.stats.retries, api.stats.requests) == (0, 4)


def test_a_refused_connection_is_retried_with_backoff_until_the_server_is_up(db: PooledDatabase) -> None:
    server = LiveServer(create_app(db))
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 3:
            server.start()  # it comes up while the client backs off

    with MakimaApi(server.url, None, retry=RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0), sleep=sleep) as c:
        try:
            assert c.get("/health")["status"] == "ok"
        finally:
            server.stop()
    assert len(delays) == 3
    assert c.stats.by_reason == {"ConnectError": 3}
    for n, d in enumerate(delays, start=1):  # exponential, with jitter in [ceiling/2, ceiling]
        ceiling = min(1.0, 0.1 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling


def test_an_unreachable_server_is_given_up_after_the_attempts() -> None:
    delays: list[float] = []
    with (
        MakimaApi(
            f"http://127.0.0.1:{free_port()}",
            None,
            retry=RetryPolicy(attempts=5, base_delay=1, max_delay=3),
            sleep=delays.append,
        ) as c,
        pytest.raises(ApiUnreachable) as caught,
    ):
        c.contract(str(uuid.uuid4()))
    assert (caught.value.code, caught.value.status) == ("UNREACHABLE", 0)
    assert c.stats.requests == 5
    assert len(delays) == 4
    assert [0.5 <= delays[0] <= 1, 1 <= delays[1] <= 2, 1.5 <= delays[2] <= 3, 1.5 <= delays[3] <= 3] == [True] * 4


def test_503_while_the_database_is_down_is_retried_and_applied_once(
    fresh_database: Callable[[str], str], server_url: str
) -> None:
    url = fresh_database("makima_client_outage")
    migrate(url)
    dbname = urlsplit(url).path.lstrip("/")
    db = PooledDatabase(url, min_size=1, max_size=4, timeout=0.5)
    with transaction(db) as conn:
        token = auth.ensure_admin(conn, token=f"mkm_client_outage_{uuid.uuid4().hex}")
    server = LiveServer(create_app(db)).start()
    try:
        with MakimaApi(server.url, token, retry=RetryPolicy(attempts=40, base_delay=0.1, max_delay=0.4)) as c:
            assert c.create_contract("before")["name"] == "before"
            set_database_reachable(server_url, dbname, False)
            try:
                # Given a client that does not retry: the API's code comes through
                with pytest.raises(ApiError) as caught:
                    c.request("POST", "/contracts", json={"name": "refused"}, retry=RetryPolicy(attempts=2))
                assert (caught.value.status, caught.value.code) == (503, "DATABASE_UNAVAILABLE")
                # When the database comes back a moment later
                threading.Timer(1.5, set_database_reachable, (server_url, dbname, True)).start()
                made = c.create_contract("during")
            finally:
                set_database_reachable(server_url, dbname, True)
            # Then the retried POST succeeded, and applied once: a refused request changes nothing
            assert made["name"] == "during"
            assert c.stats.by_reason.get("DATABASE_UNAVAILABLE", 0) >= 2
            names = Counter(x["name"] for x in c.get("/contracts", limit=200)["contracts"])
            assert names == Counter({"before": 1, "during": 1})
    finally:
        server.stop()
        db.close()


Reply = tuple[int, dict[str, str], dict[str, Any] | None, float]  # status, headers, body, stall seconds


class _Scripted(BaseHTTPRequestHandler):
    """A local test server: answers each request with the next scripted reply of its path."""

    script: dict[str, list[Reply]] = {}
    seen: list[tuple[str, str]] = []

    def _reply(self) -> None:
        self.seen.append((self.command, self.path))
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        replies = self.script.get(self.path, [])
        status, headers, body, stall = replies.pop(0) if len(replies) > 1 else replies[0]
        if stall:
            time.sleep(stall)  # longer than the client's timeout: the answer never arrives
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _reply  # noqa: N815

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"script": {}, "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def _err(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": code.lower(), "details": {}}}


def test_429_is_retried_after_the_retry_after_it_names(scripted: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted
    handler.script["/api/v1/health"] = [
        (429, {"retry-after": "0.25"}, _err("TOO_MANY_REQUESTS"), 0),
        (429, {"retry-after": "0.25"}, _err("TOO_MANY_REQUESTS"), 0),
        (200, {}, {"status": "ok"}, 0),
    ]
    delays: list[float] = []
    with MakimaApi(url, "t", retry=FAST, sleep=delays.append) as c:
        assert c.get("/health") == {"status": "ok"}
    assert delays == [0.25, 0.25]
    assert len(handler.seen) == 3


def test_503_supervisor_dead_is_not_transient(scripted: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted
    handler.script["/api/v1/contracts/x/supervisor/sync"] = [(503, {}, _err("SUPERVISOR_DEAD"), 0)]
    with MakimaApi(url, "t", retry=FAST, sleep=lambda _: None) as c, pytest.raises(ApiError) as caught:
        c.request_sync("x")
    assert (caught.value.status, caught.value.code) == (503, "SUPERVISOR_DEAD")
    assert len(handler.seen) == 1


def test_a_lost_answer_is_retried_for_get_and_creating_posts_but_not_other_posts(
    scripted: tuple[str, type[_Scripted]],
) -> None:
    url, handler = scripted
    stall: Reply = (200, {}, {"ok": True}, 0.6)
    handler.script["/api/v1/contracts/x"] = [stall, (200, {}, {"id": "x"}, 0)]
    handler.script["/api/v1/contracts/x/tasks"] = [stall, (201, {}, {"id": "t1"}, 0)]
    handler.script["/api/v1/contracts/x/status"] = [stall]
    with MakimaApi(url, "t", timeout=0.3, retry=FAST, sleep=lambda _: None) as c:
        assert c.contract("x") == {"id": "x"}  # a GET whose answer was lost is asked again
        # A creating POST is resent with its Idempotency-Key: the API answers the first result again
        assert c.spawn_task("x", "t1") == {"id": "t1"}
        with pytest.raises(ApiUnreachable):
            c.change_status("x", "paused")  # another POST that may have been applied is not resent blindly
    assert Counter(handler.seen) == Counter(
        {
            ("GET", "/api/v1/contracts/x"): 2,
            ("POST", "/api/v1/contracts/x/tasks"): 2,
            ("POST", "/api/v1/contracts/x/status"): 1,
        }
    )


# --- sessions, heartbeats, saves, restoration -------------------------------------------------------------


def _started(api: MakimaApi, daemon_api: MakimaApi, contract_type: str = "simple") -> tuple[str, str]:
    c = api.create_contract("session", contract_type=contract_type)
    daemon = daemon_api.register_daemon(f"d-{uuid.uuid4().hex[:6]}", hostname="test", capacity=4)
    return str(c["id"]), str(daemon["id"])


def test_the_heartbeat_loop_acts_on_sync_restart_and_superseded(api: MakimaApi, daemon_api: MakimaApi) -> None:
    cid, daemon_id = _started(api, daemon_api)
    session = SupervisorSession.start(daemon_api, cid, daemon_id=daemon_id)
    assert (session.generation, session.seq, session.phase) == (1, 0, "plan")
    session.update(state=SupervisorState.WORKING, activity="thinking", progress=10)
    restarts: list[int] = []
    superseded: list[int] = []
    session.on_restart = lambda s: restarts.append(s.generation)
    session.on_superseded = lambda s: superseded.append(s.generation)
    loop = session.start_heartbeats(interval=0.1, jitter=0.5)
    try:
        eventually(lambda: api.supervisor_status(cid)["heartbeat_count"] >= 2, what="heartbeats")
        status = api.supervisor_status(cid)
        assert (status["state"], status["current_activity"], status["progress"]) == ("working", "thinking", 10)

        # sync_requested: the whole state is saved at once
        session.say("hello", key="m1")
        assert api.request_sync(cid, wait_seconds=5)["synced"] is True
        eventually(lambda: api.get_state(cid)["last_save_point"] == "heartbeat", what="the sync save")
        state = api.get_state(cid)
        assert (state["save_seq"], state["conversation_history"]) == (
            1,
            [{"role": "assistant", "content": "hello", "key": "m1"}],
        )

        # restart_requested: the restart hook is called
        api.request_restart(cid, reason="new prompt")
        eventually(lambda: restarts == [1], what="the restart hook")
        assert session.restart_requested is True

        # superseded: restored elsewhere, the old session stops beating and can save nothing more
        heir = SupervisorSession.restore(daemon_api, cid, daemon_id=daemon_id)
        assert (heir.generation, heir.seq + 1, heir.conversation) == (2, 2, state["conversation_history"])
        eventually(lambda: session.superseded, what="superseded")
        assert superseded == [1]
        eventually(lambda: not loop.running, what="the loop to stop")
        with pytest.raises(Superseded) as caught:
            session.save(SavePoint.LLM_RESPONSE)
        assert (caught.value.status, caught.value.code, caught.value.reason) == (409, "CONFLICT", "superseded")
    finally:
        loop.stop()


def test_stale_saves_are_surfaced_as_409(api: MakimaApi, daemon_api: MakimaApi) -> None:
    cid, daemon_id = _started(api, daemon_api)
    old = SupervisorSession.start(daemon_api, cid, daemon_id=daemon_id)
    old.update(state=SupervisorState.WORKING)
    old.say("first")
    old.save(SavePoint.LLM_RESPONSE)
    old.save(SavePoint.HEARTBEAT)
    old.seq = 0  # a sequence the server already passed
    with pytest.raises(StaleSave) as caught:
        old.save(SavePoint.LLM_RESPONSE)
    assert (caught.value.status, caught.value.code, caught.value.reason) == (409, "CONFLICT", "stale_sequence")
    assert caught.value.details["save_seq"] == 2

    new = SupervisorSession.restore(daemon_api, cid, daemon_id=daemon_id)
    assert (new.generation, new.seq + 1, [m["content"] for m in new.conversation]) == (2, 3, ["first"])
    # the old generation is refused even with a fresh seq: a zombie cannot overwrite its successor
    old.seq = 100
    with pytest.raises(Superseded):
        old.save(SavePoint.LLM_RESPONSE)
    assert old.superseded
    new.say("second")
    assert new.save(SavePoint.TASK_SPAWN)["save_seq"] == 3
    assert [m["content"] for m in api.get_state(cid)["conversation_history"]] == ["first", "second"]


class _LoseFirstPutAnswer(httpx.HTTPTransport):
    """Delivers the first PUT to the server, then loses its answer (the connection dies)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "PUT" and not self.lost:
            self.lost += 1
            response.read()
            response.close()
            raise httpx.ReadError("connection reset after the request was sent")
        return response


def test_a_save_whose_answer_was_lost_is_retried_and_counts_once(
    live: LiveServer, owner: Caller, api: MakimaApi
) -> None:
    transport = _LoseFirstPutAnswer()
    with MakimaApi(live.url, owner.token, retry=FAST, transport=transport) as lossy:
        cid = str(api.create_contract("lossy")["id"])
        session = SupervisorSession.start(lossy, cid)
        session.say("only once")
        session.update(state=SupervisorState.WORKING)
        saved = session.save(SavePoint.LLM_RESPONSE)  # applied, answer lost, PUT resent: 409 on its own seq
        assert transport.lost == 1
        assert saved["save_seq"] == 1
        assert lossy.stats.by_reason == {"ReadError": 1}
        session.say("then this")
        session.save(SavePoint.LLM_RESPONSE)
    state = api.get_state(cid)
    assert state["save_seq"] == 2
    assert [m["content"] for m in state["conversation_history"]] == ["only once", "then this"]


def test_heartbeat_loop_jitter_and_survives_failures() -> None:
    calls: list[float] = []

    def beat() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise ApiUnreachable("blip")

    loop = HeartbeatLoop(beat, interval=0.05, jitter=0.4).start()
    eventually(lambda: len(calls) >= 5, what="beats")
    loop.stop()
    assert (loop.failures, isinstance(loop.last_error, ApiUnreachable)) == (1, True)
    waits = {round(loop.next_wait(), 4) for _ in range(50)}
    assert len(waits) > 10
    assert 0.03 <= min(waits) <= max(waits) <= 0.07


# --- the daemon and the reference supervisor ----------------------------------------------------------------


def _tasks(api: MakimaApi, cid: str) -> Counter[str]:
    return Counter(str(t["name"]) for t in api.tasks(cid) if not t["is_supervisor"])


def test_a_daemon_batches_heartbeats_and_a_crashed_supervisor_is_restored_on_another(
    api: MakimaApi, daemon_api: MakimaApi
) -> None:
    config = ReferenceConfig(step_delay=0, poll_interval=0.05, own_heartbeats=False)
    a = Daemon(daemon_api, f"a-{uuid.uuid4().hex[:6]}", heartbeat_interval=0.1).start()
    calm = str(api.create_contract("calm")["id"])
    doomed = str(api.create_contract("doomed")["id"])
    crash_at = "execute:spawned-unsaved:execute-step-1"  # the task exists; no save says so
    a.host(ReferenceSupervisor(daemon_api, calm, daemon_id=a.id, config=config))
    a.host(ReferenceSupervisor(daemon_api, doomed, daemon_id=a.id, config=config, crash_when=lambda p: p == crash_at))
    assert a.join(30)
    assert a.outcomes == {calm: "completed", doomed: "crashed"}
    assert api.contract(calm)["status"] == "completed"
    doomed_status = api.supervisor_status(doomed)
    assert (doomed_status["heartbeat_count"] >= 1, doomed_status["daemon_id"]) == (True, a.id)
    # the daemon's worktree of the completed contract was asked back and confirmed removed
    eventually(lambda: any(w.endswith(calm) for w in a.removed_worktrees), what="worktree removal")
    a.stop()

    b = Daemon(daemon_api, f"b-{uuid.uuid4().hex[:6]}", heartbeat_interval=0.1).start()
    seen: list[tuple[str, str]] = []
    heir = ReferenceSupervisor(
        daemon_api,
        doomed,
        daemon_id=b.id,
        restore=True,
        config=config,
        on_event=lambda kind, f: seen.append((kind, str(f.get("task", "")))),
    )
    b.host(heir)
    assert b.join(30)
    b.stop()
    assert b.outcomes == {doomed: "completed"}
    assert heir.session is not None
    assert heir.session.restored is not None
    assert (heir.session.restored.mode, heir.session.generation) == ("crash", 2)
    # the task created just before the crash was found by its name and recorded, not spawned again
    assert [e for e in seen if e[0] in ("task_adopted", "task_spawned")] == [
        ("task_adopted", "execute-step-1"),
        ("task_spawned", "execute-step-2"),
    ]
    assert api.supervisor_status(doomed)["daemon_id"] == b.id
    for cid in (calm, doomed):
        assert api.contract(cid)["status"] == "completed"
        assert _tasks(api, cid) == Counter({f"{p}-step-{i}": 1 for p in ("plan", "execute") for i in (1, 2)})


def test_the_reference_supervisor_restarts_itself_when_asked(api: MakimaApi, daemon_api: MakimaApi) -> None:
    cid = str(api.create_contract("restart me")["id"])
    events: list[tuple[str, dict[str, Any]]] = []
    config = ReferenceConfig(
        step_delay=0, poll_interval=0.05, heartbeat_interval=0.1, ask_in_phase="plan", question="Ready?"
    )
    sup = ReferenceSupervisor(daemon_api, cid, config=config, on_event=lambda k, f: events.append((k, dict(f))))
    thread = threading.Thread(target=sup.run)
    thread.start()
    try:
        eventually(lambda: any(k == "question_asked" for k, _ in events), what="the question")
        api.request_restart(cid, reason="rotate")  # its own heartbeat loop collects the request
        eventually(lambda: any(k == "restored" for k, _ in events), what="the restart")
        restored = next(f for k, f in events if k == "restored")
        assert (restored["mode"], restored["generation"], restored["pending_questions"]) == ("clean", 2, 1)
        question = api.questions(cid, status="pending")[0]
        api.answer_question(cid, str(question["id"]), "Yes.")
        thread.join(30)
    finally:
        sup.stop()
        thread.join(5)
    assert sup.outcome == "completed"
    assert [k for k, _ in events].count("restarting") == 1
    assert api.contract(cid)["status"] == "completed"
    assert api.questions(cid)[0]["delivered_at"] is not None
    assert _tasks(api, cid) == Counter({f"{p}-step-{i}": 1 for p in ("plan", "execute") for i in (1, 2)})
    state = api.get_state(cid)
    assert (state["generation"], state["state"]) == (2, "completed")


def test_a_daemon_reports_a_worktree_whose_task_is_gone_without_it_and_removes_it(
    api: MakimaApi, daemon_api: MakimaApi, database_url: str
) -> None:
    # Given an SDK daemon holding a worktree of a live task and one of a task the service no longer has
    # (its contract was deleted meanwhile): the service refuses a report naming that task (404)
    daemon = Daemon(daemon_api, f"trees-{uuid.uuid4().hex[:6]}", heartbeat_interval=0.1)
    daemon.register()
    contract = api.create_contract("trees")
    live_task = api.spawn_task(contract["id"], "live")["id"]
    gone_task = api.spawn_task(contract["id"], "gone")["id"]
    daemon._worktrees["/wt/live"] = {"path": "/wt/live", "branch": "a", "task_id": live_task}
    daemon._worktrees["/wt/gone"] = {"path": "/wt/gone", "branch": "b", "task_id": gone_task}
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM tasks WHERE id = %s", (gone_task,))
    # When it beats
    daemon.beat()
    # Then the beat went through: the worktree of the gone task, reported without it, was asked back and
    # removed; the live one is held for its task
    assert daemon.removed_worktrees == ["/wt/gone"]
    held = {
        w["path"]: (w["task_id"], w["state"]) for w in daemon_api.get(f"/daemons/{daemon.id}/worktrees")["worktrees"]
    }
    assert held == {"/wt/live": (live_task, "active"), "/wt/gone": (None, "removed")}


class _Parked:
    """A hosted supervisor that only holds its session until told to go (the race below needs no work)."""

    def __init__(self, session: SupervisorSession) -> None:
        self.contract_id = session.contract_id
        self._session = session
        self.done = threading.Event()

    @property
    def session(self) -> SupervisorSession | None:
        return self._session

    def run(self) -> str:
        self.done.wait(30)
        return "stopped"

    def crash(self) -> None:
        self.done.set()

    def stop(self) -> None:
        self.done.set()


def test_a_daemon_beat_racing_a_shutdown_save_does_not_bring_the_supervisor_back(
    api: MakimaApi, daemon_api: MakimaApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's batch is built while a supervisor's shutdown save is on the wire: the heartbeat must
    not be stamped after the save landed (the service would take it as the supervisor coming back, and
    sweep it as dead later), even though the daemon chose the session before the save answered."""
    # Given a daemon hosting a supervisor whose shutdown save has reached the service but not answered
    cid, _ = _started(api, daemon_api)
    daemon = Daemon(daemon_api, f"race-{uuid.uuid4().hex[:6]}", heartbeat_interval=3600).start()
    session = SupervisorSession.start(daemon_api, cid, daemon_id=daemon.id)
    parked = _Parked(session)
    daemon.host(parked)
    landed, release = threading.Event(), threading.Event()
    real_save = daemon_api.save_state

    def save_then_hold(contract_id: str, body: dict[str, Any]) -> Any:
        answer = real_save(contract_id, body)
        if body["save_point"] == "shutdown":
            landed.set()
            release.wait(10)
        return answer

    monkeypatch.setattr(daemon_api, "save_state", save_then_hold)
    saver = threading.Thread(target=session.save, args=(SavePoint.SHUTDOWN,))
    saver.start()
    try:
        assert landed.wait(10)
        assert api.supervisor_status(cid)["stopped"] is True
        # When the daemon beats now (it sees the session not yet stopped), and the save answers meanwhile
        beat = threading.Thread(target=daemon.beat)
        beat.start()
        time.sleep(0.2)
        release.set()
        beat.join(10)
        saver.join(10)
    finally:
        release.set()
        parked.stop()
        daemon.stop()
    # Then the supervisor is still stopped on purpose: the beat sent nothing for it
    status = api.supervisor_status(cid)
    assert (status["stopped"], status["adoptable"]) == (True, True), status


class _FirstPostAnswers503(httpx.HTTPTransport):
    """Delivers the first POST to the server, then answers 503 DATABASE_UNAVAILABLE in place of its
    answer: a commit followed by a failure (the connection to the database lost after it)."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.keys.append(request.headers.get("idempotency-key"))
            if not self.dropped:
                self.dropped += 1
                response.read()
                response.close()
                error = {"code": "DATABASE_UNAVAILABLE", "message": "retry shortly", "details": {}}
                return httpx.Response(503, json={"error": error})
        return response


def test_a_create_retried_after_a_503_that_followed_its_commit_makes_one_contract(
    live: LiveServer, owner: Caller, api: MakimaApi
) -> None:
    # Given a client whose first POST is applied by the server but answered 503
    transport = _FirstPostAnswers503()
    name = f"once-{uuid.uuid4().hex[:8]}"
    with MakimaApi(live.url, owner.token, retry=FAST, sleep=lambda _: None, transport=transport) as lossy:
        # When it creates a contract (the SDK retries the 503)
        created = lossy.create_contract(name)
        assert lossy.stats.by_reason == {"DATABASE_UNAVAILABLE": 1}

    # Then the retry carried the same key, got the first answer, and there is one contract
    assert transport.dropped == 1
    assert transport.keys[0]
    assert transport.keys == [transport.keys[0]] * 2
    mine = [c for c in api.get("/contracts", limit=100)["contracts"] if c["name"] == name]
    assert [c["id"] for c in mine] == [created["id"]]


# --- paged lists (issue 13, defect 6) -----------------------------------------------------------------


def test_the_sdk_reads_whole_lists_page_after_page(
    api: MakimaApi, daemon_api: MakimaApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given lists longer than a page (pages of 2 here)
    import makima.client.api as client_api

    monkeypatch.setattr(client_api, "PAGE_SIZE", 2)
    c = api.create_contract("pages")
    daemon_api.request("POST", f"/contracts/{c['id']}/tasks", json={"name": "supervisor", "is_supervisor": True})
    for i in range(5):
        api.spawn_task(c["id"], f"t{i}")
        daemon_api.ask_question(c["id"], f"q{i}?")
        api.request("POST", f"/contracts/{c['id']}/messages", json={"content": f"m{i}"})
    daemon = api.register_daemon("pages-host")
    api.daemon_heartbeat(daemon["id"], [{"path": f"/w/{i}"} for i in range(5)])
    before = api.stats.requests
    # Then each list comes back whole, in order, one request per page
    assert [t["name"] for t in api.tasks(c["id"]) if not t["is_supervisor"]] == [f"t{i}" for i in range(5)]
    assert api.stats.requests - before == 3
    assert [q["question"] for q in api.questions(c["id"])] == [f"q{i}?" for i in range(5)]
    assert [q["question"] for q in api.questions(c["id"], status="pending")] == [f"q{i}?" for i in range(5)]
    assert [m["content"] for m in api.messages(c["id"])] == [f"m{i}" for i in range(5)]
    assert [w["path"] for w in api.worktrees(daemon["id"])] == [f"/w/{i}" for i in range(5)]
    assert {"simple"} <= {t["name"] for t in api.contract_types()}
