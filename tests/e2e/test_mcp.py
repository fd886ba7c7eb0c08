"""makima's MCP server (issue 18) driven by the official ``mcp`` client (``ClientSession``) against the
running local stack: over stdio (``makima mcp`` spawned as a subprocess, its token in ``MAKIMA_TOKEN``)
and over streamable HTTP (``/mcp`` on the stack, the token in ``Authorization``).

A ``simple`` contract with the phase guard goes from creation to completion through tools alone: the
owner's tools under a user token on one transport, the supervisor's under a daemon token of the same
user on the other (and the other way round). The tool list and each input schema are checked, bad
arguments are tool errors after which the server keeps serving, and the HTTP endpoint acts only under a
valid bearer token from the request's header.

``MAKIMA_MCP_TRANSCRIPT=<file>`` writes the calls and their results (as the README shows them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

import makima
from makima.domain.statuses import ContractStatus
from makima.domain.supervisors import SavePoint, SupervisorState
from makima.mcp_server.waits import MAX_WAIT_SECONDS
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

SUPERVISOR_TOOLS = {
    "get_contract_context",
    "start_supervisor",
    "mark_deliverable",
    "spawn_task",
    "start_task",
    "complete_task",
    "request_phase_change",
    "ask_owner",
    "wait_for_answer",
    "send_message",
    "heartbeat",
    "save_state",
    "restore_supervisor",
}
OWNER_TOOLS = {
    "create_contract",
    "list_contracts",
    "show_contract",
    "answer_question",
    "confirm_phase_change",
    "pause_contract",
    "resume_contract",
}
LAYER = str(Path(makima.__file__).resolve().parents[1])  # this checkout's package, for the subprocess


@dataclass
class People:
    user_token: str
    daemon_token: str
    user_id: str


def _people(stack: Stack, name: str) -> People:
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"{name}-{uuid.uuid4().hex[:8]}"}).json()
        tokens = [
            admin.post(f"/users/{user['id']}/tokens", json={"kind": kind, "name": f"mcp-{kind}"}).json()["token"]
            for kind in ("user", "daemon")
        ]
    return People(tokens[0], tokens[1], str(user["id"]))


@pytest.fixture
def people(stack: Stack) -> People:
    return _people(stack, "mcp")


# --- the two transports -------------------------------------------------------------------------------


@asynccontextmanager
async def over_stdio(stack: Stack, token: str) -> AsyncIterator[ClientSession]:
    """``makima mcp`` as an MCP client starts it: the token in the environment, never in the arguments."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "makima.cli.main", "mcp", "--api-url", stack.base_url],
        env={"MAKIMA_TOKEN": token, "PYTHONPATH": LAYER, "MAKIMA_CLI_CONFIG": "/nonexistent/cli.toml"},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_http(stack: Stack, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        streamable_http_client(f"{stack.base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


Connect = Callable[[Stack, str], Any]
TRANSPORTS: dict[str, Connect] = {"stdio": over_stdio, "http": over_http}


@dataclass
class Agent:
    """One side of the conversation: calls tools, keeps the transcript."""

    role: str
    session: ClientSession
    transcript: list[str] = field(default_factory=list)

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.raw(tool, **arguments)
        assert not result.is_error, f"{tool}: {_text(result)}"
        assert isinstance(result.structured_content, dict)
        return result.structured_content

    async def raw(self, tool: str, **arguments: Any) -> CallToolResult:
        result = await self.session.call_tool(tool, arguments)
        shown = _text(result)
        self.transcript.append(
            f"{self.role} → {tool}({json.dumps(arguments)})\n"
            f"  {'ERROR ' if result.is_error else ''}{shown[:400]}{'…' if len(shown) > 400 else ''}"
        )
        return result


def _text(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _error(result: CallToolResult) -> dict[str, Any]:
    """The API's error a tool result carries (``isError``, with the error in the structured content)."""
    assert result.is_error, _text(result)
    assert isinstance(result.structured_content, dict)
    error: dict[str, Any] = result.structured_content["error"]
    return error


def _run(main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main)


def _write_transcript(lines: list[str], title: str) -> None:
    target = os.environ.get("MAKIMA_MCP_TRANSCRIPT")
    if target:
        with Path(target).open("a", encoding="utf-8") as f:
            f.write(f"# {title}\n\n" + "\n".join(lines) + "\n\n")


# --- tools and schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_tools_and_their_input_schemas(stack: Stack, people: People, transport: str) -> None:
    async def main() -> None:
        async with TRANSPORTS[transport](stack, people.user_token) as session:
            # Given the server's tool list
            tools = {t.name: t for t in (await session.list_tools()).tools}
            templates = (await session.list_resource_templates()).resource_templates

        # Then it holds the supervisor's and the owner's tools, each described for a model
        assert set(tools) == SUPERVISOR_TOOLS | OWNER_TOOLS
        for tool in tools.values():
            assert tool.description, tool.name
            assert len(tool.description) > 80, tool.name
            assert tool.input_schema["type"] == "object"
            for name, prop in tool.input_schema["properties"].items():
                assert prop.get("description"), f"{tool.name}.{name} has no description"
        # ... whose arguments say their types, bounds and choices
        schema = {name: t.input_schema for name, t in tools.items()}
        assert schema["get_contract_context"]["required"] == ["contract_id"]
        assert schema["get_contract_context"]["properties"]["contract_id"]["format"] == "uuid"
        assert schema["mark_deliverable"]["required"] == ["contract_id", "deliverable_id"]
        ask = schema["ask_owner"]
        assert ask["required"] == ["contract_id", "question"]
        assert ask["properties"]["wait_seconds"]["maximum"] == MAX_WAIT_SECONDS
        assert ask["properties"]["wait_seconds"]["minimum"] == 0
        assert schema["wait_for_answer"]["required"] == ["contract_id", "question_id"]
        assert _enum(schema["heartbeat"], "state") == {s.value for s in SupervisorState}
        assert schema["heartbeat"]["properties"]["progress"]["maximum"] == 100
        assert _enum(schema["save_state"], "save_point") == {p.value for p in SavePoint}
        assert _enum(schema["complete_task"], "outcome") == {"completed", "failed"}
        assert schema["pause_contract"]["required"] == ["contract_id", "reason"]
        status_items = schema["list_contracts"]["properties"]["status"]["anyOf"][0]["items"]
        assert _enum({"properties": {"s": status_items}, "$defs": schema["list_contracts"].get("$defs", {})}, "s") == {
            s.value for s in ContractStatus
        }
        assert "phase guard" in (tools["request_phase_change"].description or "").lower()
        assert "phase guard" in (tools["confirm_phase_change"].description or "").lower()
        # ... and the contract's resources are templates over its id
        assert {t.uri_template for t in templates} == {
            "makima://contracts/{contract_id}",
            "makima://contracts/{contract_id}/events",
        }

    _run(main)


def _enum(schema: dict[str, Any], prop: str) -> set[str]:
    """The values a property takes, through a ``$ref`` to ``$defs`` when pydantic made one."""
    p = schema["properties"][prop]
    if "$ref" in p:
        p = schema["$defs"][p["$ref"].rsplit("/", 1)[1]]
    return set(p["enum"])


# --- a guarded simple contract, creation to completion, through tools alone ---------------------------


@pytest.mark.parametrize(("owner_over", "supervisor_over"), [("http", "stdio"), ("stdio", "http")])
def test_a_guarded_simple_contract_from_creation_to_completion(
    stack: Stack, people: People, owner_over: str, supervisor_over: str
) -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack_:
            owner = Agent("owner", await stack_.enter_async_context(TRANSPORTS[owner_over](stack, people.user_token)))
            sup = Agent(
                "supervisor", await stack_.enter_async_context(TRANSPORTS[supervisor_over](stack, people.daemon_token))
            )
            sup.transcript = owner.transcript  # one transcript, in order
            await _drive(owner, sup)
            _write_transcript(owner.transcript, f"owner over {owner_over}, supervisor over {supervisor_over}")

    _run(main)


async def _drive(owner: Agent, sup: Agent) -> None:
    # Given a contract the owner creates with the phase guard on
    created = await owner.call("create_contract", name="Add login", description="OAuth via GitHub", phase_guard=True)
    cid = created["id"]
    assert (created["contract_type"], created["phase"], created["status"]) == ("simple", "plan", "created")

    # When the supervisor reads it and starts on it
    context = await sup.call("get_contract_context", contract_id=cid)
    assert [d["id"] for d in context["deliverables"]] == ["plan-document"]
    assert context["next_phase"] == "execute"
    started = await sup.call("start_supervisor", contract_id=cid)
    assert started["contract"]["status"] == "active"
    beat = await sup.call("heartbeat", contract_id=cid, state="working", progress=5, current_activity="planning")
    assert beat["accepted"] is True

    # ... does the plan phase's work: a task and the deliverable
    task = await sup.call("spawn_task", contract_id=cid, name="write the plan")
    await sup.call("start_task", contract_id=cid, task_id=task["id"])
    marked = await sup.call("mark_deliverable", contract_id=cid, deliverable_id="plan-document")
    assert marked["contract"]["phase"] == "plan"  # the task is still open: the gate is not met
    done = await sup.call("complete_task", contract_id=cid, task_id=task["id"])
    assert done["task"]["status"] == "completed"

    # Then the phase is ready, and the guard holds it for the owner
    assert (done["contract"]["status"], done["contract"]["waiting_for"]) == (
        "waiting_for_input",
        "phase_confirmation:execute",
    )
    asked = await sup.call("request_phase_change", contract_id=cid)
    assert asked["status"] == "owner_confirmation_required"
    assert (asked["current_phase"], asked["target_phase"]) == ("plan", "execute")
    still = await sup.call("get_contract_context", contract_id=cid)
    assert still["contract"]["phase"] == "plan"

    # ... and the supervisor cannot confirm in the owner's place
    self_confirmed = await sup.raw("confirm_phase_change", contract_id=cid)
    assert _error(self_confirmed)["code"] == "FORBIDDEN"
    assert (await sup.call("get_contract_context", contract_id=cid))["contract"]["phase"] == "plan"

    # When the owner finds what waits for them and confirms
    waiting = await owner.call("list_contracts", waiting=True)
    assert [c["id"] for c in waiting["contracts"]] == [cid]
    confirmed = await owner.call("confirm_phase_change", contract_id=cid)
    assert confirmed["contract"]["phase"] == "execute"
    assert confirmed["contract"]["status"] == "active"

    # Then the supervisor asks the owner a question; the bounded wait runs out and says how to resume
    pending = await sup.call("ask_owner", contract_id=cid, question="GitHub only, or Google too?", wait_seconds=0.5)
    assert pending["status"] == "waiting"
    qid = pending["question_id"]
    shown = await owner.call("show_contract", contract_id=cid)
    assert [q["id"] for q in shown["pending_questions"]] == [qid]
    assert shown["contract"]["status"] == "waiting_for_input"
    assert shown["supervisor"]["alive"] is True
    # ... a supervisor's token cannot answer it (people only)
    refused = await sup.raw("answer_question", contract_id=cid, question_id=qid, answer="me")
    assert _error(refused)["code"] == "FORBIDDEN"
    await owner.call("answer_question", contract_id=cid, question_id=qid, answer="GitHub only")
    answered = await sup.call("wait_for_answer", contract_id=cid, question_id=qid, wait_seconds=5)
    assert (answered["status"], answered["answer"]) == ("answered", "GitHub only")

    # ... saves its state, is restored after a (simulated) restart, and carries on
    await sup.call("send_message", contract_id=cid, content="Plan confirmed; implementing GitHub OAuth.")
    saved = await sup.call(
        "save_state",
        contract_id=cid,
        save_point="llm_response",
        state="working",
        current_activity="implementing",
        messages=[{"role": "assistant", "content": "Implementing GitHub OAuth."}],
    )
    assert (saved["save_seq"], saved["conversation_length"]) == (1, 1)
    restored = await sup.call("restore_supervisor", contract_id=cid)
    assert restored["mode"] == "crash"
    assert restored["generation"] == 2
    assert restored["recent_messages"] == [{"role": "assistant", "content": "Implementing GitHub OAuth."}]
    assert "execute" in restored["restoration_context"]
    await sup.call("heartbeat", contract_id=cid, state="working", progress=60, current_activity="implementing")

    # When the owner pauses the contract while the supervisor finishes the execute phase's work
    impl = await sup.call("spawn_task", contract_id=cid, name="implement GitHub OAuth")
    await sup.call("start_task", contract_id=cid, task_id=impl["id"])
    paused = await owner.call("pause_contract", contract_id=cid, reason="reviewing the approach")
    assert paused["contract"]["status"] == "paused"
    no_new_work = await sup.raw("spawn_task", contract_id=cid, name="write more tests")
    assert _error(no_new_work)["code"] == "INVALID_TRANSITION"
    await sup.call("mark_deliverable", contract_id=cid, deliverable_id="implementation")
    await sup.call("mark_deliverable", contract_id=cid, deliverable_id="pull-request")
    finished = await sup.call("complete_task", contract_id=cid, task_id=impl["id"])

    # Then the paused contract takes no new task, does not move by itself, and nobody can move its phase
    assert (finished["contract"]["status"], finished["contract"]["phase"]) == ("paused", "execute")
    refused_move = await owner.raw("confirm_phase_change", contract_id=cid, phase="plan", force=True)
    assert _error(refused_move)["code"] == "INVALID_TRANSITION"

    # When the owner resumes it, its gate is evaluated at once: completion waits for their confirmation too
    resumed = await owner.call("resume_contract", contract_id=cid, reason="approach is fine")
    assert (resumed["previous_status"], resumed["contract"]["status"]) == ("paused", "waiting_for_input")
    assert resumed["contract"]["waiting_for"] == "completion_confirmation"
    completed = await owner.call("confirm_phase_change", contract_id=cid)
    assert completed["status"] == "completed"
    final = await owner.call("show_contract", contract_id=cid)
    assert final["contract"]["status"] == "completed"

    # ... and the contract's resources tell the story without a tool call
    summary = json.loads(_resource_text(await sup.session.read_resource(f"makima://contracts/{cid}")))
    assert summary["contract"]["status"] == "completed"
    log = json.loads(_resource_text(await owner.session.read_resource(f"makima://contracts/{cid}/events")))
    types = [e["type"] for e in log["events"]]
    assert "phase_changed" in types
    assert types[-1] == "status_changed"
    assert log["events"][-1]["payload"]["new_status"] == "completed"


def _resource_text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.contents)


# --- bad arguments: tool errors, and the server keeps serving -----------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(
    stack: Stack, people: People, transport: str
) -> None:
    async def main() -> None:
        async with TRANSPORTS[transport](stack, people.user_token) as session:
            agent = Agent("owner", session)
            cid = (await agent.call("create_contract", name="bad arguments"))["id"]
            # Given calls the SDK refuses before any request: a missing argument, a wrong type, a value out
            # of range, a choice not offered, an unknown tool
            for tool, arguments in [
                ("mark_deliverable", {"contract_id": cid}),
                ("get_contract_context", {"contract_id": "not-a-uuid"}),
                ("ask_owner", {"contract_id": cid, "question": "?", "wait_seconds": MAX_WAIT_SECONDS + 1}),
                ("heartbeat", {"contract_id": cid, "state": "dancing"}),
                ("list_contracts", {"threshold": "soon"}),
                ("no_such_tool", {}),
            ]:
                result = await agent.raw(tool, **arguments)
                # Then each is an error result naming the problem
                assert result.is_error, (tool, arguments)
                assert tool in _text(result) or "unknown" in _text(result).lower(), _text(result)
            # Given calls the API refuses: they carry its code, status and message
            missing = await agent.raw("show_contract", contract_id=str(uuid.uuid4()))
            error = _error(missing)
            assert (error["code"], error["status"]) == ("CONTRACT_NOT_FOUND", 404)
            assert _text(missing).startswith("CONTRACT_NOT_FOUND (404): ")
            wrong = _error(await agent.raw("mark_deliverable", contract_id=cid, deliverable_id="nope"))
            assert wrong["code"] == "INVALID_DELIVERABLE"
            assert wrong["details"]["valid_deliverables"] == ["plan-document"]
            with pytest.raises(Exception, match="INVALID_REQUEST"):
                await session.read_resource("makima://contracts/not-a-uuid")
            # And the server still serves
            assert (await agent.call("show_contract", contract_id=cid))["contract"]["id"] == cid

    _run(main)


# --- HTTP: the caller's bearer token, from the header only --------------------------------------------


def test_http_acts_only_under_the_bearer_token_of_the_request(stack: Stack, people: People) -> None:
    url = f"{stack.base_url}/mcp"
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    # Given requests without a token, with an unknown one, and with the token in the URL only
    for headers, query in [
        ({}, ""),
        ({"Authorization": "Bearer mkm_not_a_token"}, ""),
        ({"Authorization": f"Basic {people.user_token}"}, ""),
        ({}, f"?token={people.user_token}"),
        ({}, f"?access_token={people.user_token}"),
    ]:
        answer = httpx.post(url + query, json=init, headers={**accept, **headers}, timeout=10)
        # Then each is refused before the MCP transport, in the API's error shape
        assert answer.status_code == 401, (headers, query, answer.text)
        assert answer.json()["error"]["code"] == "UNAUTHORIZED"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    # ... and a metrics token (GET /metrics only) is refused as on every API route but that one
    with stack.client() as admin:
        admin_id = next(u["id"] for u in admin.get("/users").json()["users"] if u["role"] == "admin")
        metrics = admin.post(f"/users/{admin_id}/tokens", json={"kind": "metrics", "name": "mcp-metrics"}).json()
    scraper = httpx.post(url, json=init, headers={**accept, "Authorization": f"Bearer {metrics['token']}"}, timeout=10)
    assert scraper.status_code == 403, scraper.text
    assert scraper.json()["error"]["code"] == "FORBIDDEN"
    # ... while the header's token is served
    ok = httpx.post(url, json=init, headers={**accept, "Authorization": f"Bearer {people.user_token}"}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["serverInfo"]["name"] == "makima"

    # Given another user's contract, and a token revoked since
    other = _people(stack, "mcp-other")

    async def main() -> None:
        async with over_http(stack, other.user_token) as session:
            theirs = (await Agent("other", session).call("create_contract", name="not yours"))["id"]
        async with over_http(stack, people.user_token) as session:
            # Then a tool acts under the request's token: another owner's contract is not found
            result = await Agent("owner", session).raw("show_contract", contract_id=theirs)
            assert _error(result)["code"] == "CONTRACT_NOT_FOUND"

    _run(main)
    with stack.client() as admin:
        token_id = next(
            t["id"] for t in admin.get(f"/users/{people.user_id}/tokens").json()["tokens"] if t["kind"] == "user"
        )
        assert admin.delete(f"/tokens/{token_id}").status_code == 204
    revoked = httpx.post(url, json=init, headers={**accept, "Authorization": f"Bearer {people.user_token}"}, timeout=10)
    assert revoked.status_code == 401


def test_stdio_needs_a_token_from_the_environment(stack: Stack) -> None:
    # Given makima mcp started without MAKIMA_TOKEN and without a stored login
    env = {k: v for k, v in os.environ.items() if k != "MAKIMA_TOKEN"}
    env.update({"PYTHONPATH": LAYER, "MAKIMA_CLI_CONFIG": "/nonexistent/cli.toml"})
    result = subprocess.run(
        [sys.executable, "-m", "makima.cli.main", "mcp", "--api-url", stack.base_url],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Then it refuses to start, says why on standard error, and writes nothing on the protocol's stream
    assert result.returncode == 2
    assert "MAKIMA_TOKEN" in result.stderr
    assert result.stdout == ""
