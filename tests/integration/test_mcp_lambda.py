"""The MCP function (``functions/mcp``) invoked as Lambda would, with API Gateway HTTP API (payload 2.0)
events built from ``events/http/mcp_*.json``, its tools calling a real makima API: the app under
uvicorn over the test database (``live``), whose URL is the SSM parameter the template writes (SSM on
moto; nothing else here is mocked).

Held here: the MCP exchange (initialize, tools/list, a read tool, a tool error) on one warm handler,
invocation after invocation; a request without a bearer token is 401; the token goes only to the
configured API, whatever host the request names; GET and DELETE are 405 (no stream, no session); an
unreadable URL is a 503 that the next invocation recovers from; the answer wait is capped on Lambda.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from moto import mock_aws

from makima.lambda_support import mcp as mcp_lambda
from tests.conftest import Caller
from tests.integration.live import LiveServer
from tests.integration.test_lambda_handlers import EVENTS, ROOT, FakeContext

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]

PARAMETER = "/makima-test/mcp/api-url"
PLACEHOLDER_TOKEN = "mkm_placeholder_token"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def ssm(lambda_container: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """SSM on moto, in the function's region, and the function's environment naming the parameter."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv(mcp_lambda.API_URL_PARAMETER, PARAMETER)
    with mock_aws():
        yield boto3.client("ssm")


@pytest.fixture
def api(ssm: Any, live: LiveServer) -> LiveServer:
    """The stack's API URL in the parameter, as the template writes it: the live API's."""
    ssm.put_parameter(Name=PARAMETER, Value=live.url, Type="String")
    return live


def fresh_handler() -> Handler:
    """``functions/mcp/app.py`` imported anew, as a new container would."""
    path = ROOT / "functions" / "mcp" / "app.py"
    spec = importlib.util.spec_from_file_location(f"makima_function_mcp_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: Handler = module.handler
    return handler


def event(method: str, token: str | None, message: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """The sample event of ``method /mcp`` with the caller's token (None: no Authorization header) and
    a JSON-RPC ``message`` as its body."""
    text = (EVENTS / "http" / f"mcp_{method.lower()}.json").read_text(encoding="utf-8")
    built: dict[str, Any] = json.loads(text)
    built["headers"].pop("authorization")
    if token is not None:
        built["headers"]["authorization"] = f"Bearer {token}"
    built["headers"].update(headers)
    if message is not None:
        built["body"] = json.dumps(message)
    return built


class Rpc:
    """JSON-RPC over one handler: each call one invocation."""

    def __init__(self, handler: Handler, token: str | None) -> None:
        self.handler = handler
        self.token = token
        self.next_id = 0

    def post(
        self, method: str, params: dict[str, Any] | None = None, domain: str | None = None, **headers: str
    ) -> dict[str, Any]:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        headers.setdefault("mcp-protocol-version", LATEST_HANDSHAKE_VERSION)
        built = event("POST", self.token, message, **headers)
        if domain is not None:
            built["requestContext"]["domainName"] = domain
        return self.handler(built, FakeContext())

    def result(self, method: str, params: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        response = self.post(method, params, **headers)
        assert response["statusCode"] == 200, response
        assert response["headers"]["content-type"].startswith("application/json"), response
        body = json.loads(response["body"])
        assert "error" not in body, body
        result: dict[str, Any] = body["result"]
        return result

    def tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        return self.result("tools/call", {"name": name, "arguments": arguments})


def initialize(rpc: Rpc) -> dict[str, Any]:
    params = {
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "lambda-test", "version": "1"},
    }
    return rpc.result("initialize", params)


def test_an_mcp_exchange_on_one_warm_handler(
    api: LiveServer, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    # Given a user with a contract, and the MCP function freshly loaded (one container)
    contract = new_contract(user, name=f"mcp-lambda-{uuid.uuid4().hex[:8]}")
    rpc = Rpc(fresh_handler(), user.token)

    # When a client initializes, lists the tools and calls a read tool, one invocation each
    init = initialize(rpc)
    tools = {tool["name"] for tool in rpc.result("tools/list")["tools"]}
    listed = rpc.tool("list_contracts")

    # Then the server is makima's, its tools are there, and the tool read the API under the user's token
    assert init["serverInfo"]["name"] == "makima"
    assert {"list_contracts", "show_contract", "ask_owner", "wait_for_answer"} <= tools
    assert listed["isError"] is False
    assert contract["id"] in {c["id"] for c in listed["structuredContent"]["contracts"]}

    # And a tool error comes back as a tool result carrying the API's code, the handler still serving
    missing = rpc.tool("show_contract", contract_id=str(uuid.uuid4()))
    assert missing["isError"] is True
    assert missing["structuredContent"]["error"]["code"] == "CONTRACT_NOT_FOUND"
    # ... invocation after invocation on the same warm container
    for _ in range(2):
        again = rpc.tool("show_contract", contract_id=contract["id"])
        assert again["isError"] is False, again
        assert json.dumps(again["structuredContent"]).count(contract["id"]) >= 1


def test_another_users_token_reads_only_their_own(
    api: LiveServer, make_caller: Callable[..., Caller], new_contract: Callable[..., dict[str, Any]]
) -> None:
    # Given two users, one contract each, on the same warm handler
    handler = fresh_handler()
    alice, bob = make_caller(), make_caller()
    mine = new_contract(alice)

    # When each calls through the same container
    as_alice = Rpc(handler, alice.token).tool("show_contract", contract_id=mine["id"])
    as_bob = Rpc(handler, bob.token).tool("show_contract", contract_id=mine["id"])

    # Then each request ran under its own token
    assert as_alice["isError"] is False
    assert as_bob["structuredContent"]["error"]["code"] == "CONTRACT_NOT_FOUND"


def test_a_request_without_a_bearer_token_is_401(api: LiveServer) -> None:
    handler = fresh_handler()
    for token_header in (None, "Basic dXNlcjpwYXNz"):
        # When a request comes without Authorization: Bearer (no header, another scheme)
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        built = event("POST", None, message)
        if token_header is not None:
            built["headers"]["authorization"] = token_header
        response = handler(built, FakeContext())

        # Then it is refused before the MCP transport, in the API's error shape
        assert response["statusCode"] == 401, response
        assert response["headers"]["www-authenticate"].startswith("Bearer")
        assert json.loads(response["body"])["error"]["code"] == "UNAUTHORIZED"


class Decoy:
    """An HTTP server that records every request it receives (and answers 200 {})."""

    def __init__(self) -> None:
        received: list[tuple[str, str, str | None]] = []

        class Recorder(BaseHTTPRequestHandler):
            def handle_one_request(self) -> None:
                # every method alike: the request line and headers read, then recorded
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline or not self.parse_request():
                    return
                self._record()

            def _record(self) -> None:
                received.append((self.command, self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    server = Decoy()
    # it does record what reaches it (so an empty record below means nothing did)
    httpx.post(f"http://127.0.0.1:{server.port}/api/v1/contracts", headers={"Authorization": "Bearer probe"})
    assert server.received == [("POST", "/api/v1/contracts", "Bearer probe")]
    server.received.clear()
    yield server
    server.close()


def test_the_token_goes_only_to_the_configured_api_whatever_host_the_request_names(
    api: LiveServer, user: Caller, new_contract: Callable[..., dict[str, Any]], decoy: Decoy
) -> None:
    # Given a request naming another server everywhere a request can name one
    contract = new_contract(user)
    elsewhere = f"127.0.0.1:{decoy.port}"
    rpc = Rpc(fresh_handler(), user.token)
    spoofed = {
        "host": elsewhere,
        "x-forwarded-host": elsewhere,
        "forwarded": f"host={elsewhere}",
        "origin": f"http://{elsewhere}",
    }

    # When it calls a tool
    initialize(rpc)
    arguments = {"contract_id": contract["id"]}
    response = rpc.post("tools/call", {"name": "show_contract", "arguments": arguments}, elsewhere, **spoofed)

    # Then the tool reached the stack's API (the contract came back) and the other server saw nothing
    assert response["statusCode"] == 200, response
    result = json.loads(response["body"])["result"]
    assert result["isError"] is False, result
    assert contract["id"] in json.dumps(result["structuredContent"])
    assert decoy.received == []


def test_get_and_delete_are_405(api: LiveServer, user: Caller) -> None:
    handler = fresh_handler()
    # GET would be the standalone SSE stream: none here (a buffered Lambda answer cannot stream)
    got = handler(event("GET", user.token), FakeContext())
    assert got["statusCode"] == 405, got
    assert "POST" in got["headers"]["allow"]
    # DELETE would end a session: the stateless transport has none
    deleted = handler(event("DELETE", user.token), FakeContext())
    assert deleted["statusCode"] == 405, deleted
    # And neither is answered without a token
    assert handler(event("GET", None), FakeContext())["statusCode"] == 401


def test_an_unreadable_api_url_is_503_and_the_next_invocation_reads_it_again(
    ssm: Any, live: LiveServer, user: Caller
) -> None:
    # Given a container started before the parameter exists
    rpc = Rpc(fresh_handler(), user.token)

    # When a request comes, then another once the parameter is there
    first = rpc.post("tools/list")
    ssm.put_parameter(Name=PARAMETER, Value=live.url, Type="String", Overwrite=True)
    second = rpc.result("tools/list")

    # Then the first is a 503 in the API's error shape (no 500, nothing cached), the second is served
    assert first["statusCode"] == 503, first
    assert json.loads(first["body"])["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert second["tools"]


@pytest.mark.parametrize("value", ["ftp://example.com", "not a url", "https://"])
def test_a_parameter_that_is_not_an_http_url_is_refused(ssm: Any, user: Caller, value: str) -> None:
    ssm.put_parameter(Name=PARAMETER, Value=value, Type="String", Overwrite=True)
    response = Rpc(fresh_handler(), user.token).post("tools/list")
    assert response["statusCode"] == 503, response


def test_the_answer_wait_is_capped_on_lambda(
    api: LiveServer, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    # Given the function's cap, under the function's timeout and API Gateway's 30 s
    assert mcp_lambda.LAMBDA_MAX_WAIT_SECONDS <= 15
    # And a handler capping at 1 s (the same code path, shorter for the test)
    handler = mcp_lambda.make_mcp_handler(max_wait_seconds=1.0)
    contract = new_contract(user)
    rpc = Rpc(handler, user.token)

    # When a model asks the owner and offers to wait 25 s (the most the tool's schema allows)
    asked = rpc.tool("ask_owner", contract_id=contract["id"], question="Which colour?", wait_seconds=25)

    # Then the call came back after the cap with 'waiting' and the question's id, to wait again
    state = asked["structuredContent"]
    assert asked["isError"] is False, asked
    assert state["status"] == "waiting"
    assert state["waited_seconds"] < 5
    waited = rpc.tool("wait_for_answer", contract_id=contract["id"], question_id=state["question_id"], wait_seconds=25)
    assert waited["structuredContent"]["status"] == "waiting"
    assert waited["structuredContent"]["waited_seconds"] < 5
