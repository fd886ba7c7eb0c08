"""The edges of the HTTP surface: oversized and malformed bodies, unknown routes and methods."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"


def test_oversized_body_is_413_before_parsing(client: TestClient, user: Caller) -> None:
    big = '{"name": "' + "x" * 300_000 + '"}'
    r = client.post(f"{API}/contracts", content=big, headers={**user.headers, "content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_oversized_chunked_body_without_length_is_413(client: TestClient, user: Caller) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}'

    r = client.post(f"{API}/contracts", content=chunks(), headers={**user.headers, "content-type": "application/json"})
    assert r.status_code == 413


def test_malformed_json_is_400(client: TestClient, user: Caller) -> None:
    r = client.post(
        f"{API}/contracts", content=b"{not json", headers={**user.headers, "content-type": "application/json"}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "BAD_REQUEST")


def test_wrong_types_and_unknown_fields_are_422_naming_the_field(client: TestClient, user: Caller) -> None:
    r = client.post(f"{API}/contracts", json={"name": 5}, headers=user.headers)
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("name:")
    r = client.post(f"{API}/contracts", json={"name": "x", "colour": "red"}, headers=user.headers)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["body", "colour"]


def test_bad_path_ids_unknown_routes_and_methods(client: TestClient, user: Caller) -> None:
    r = client.get(f"{API}/contracts/not-a-uuid", headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST")
    r = client.get(f"{API}/nothing-here", headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "NOT_FOUND")
    r = client.put(f"{API}/contracts", headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_contract_types_are_listed(client: TestClient, user: Caller) -> None:
    types = {t["name"]: t for t in client.get(f"{API}/contract-types", headers=user.headers).json()["contract_types"]}
    assert [p["id"] for p in types["specification"]["phases"]] == ["research", "specify", "plan", "execute", "review"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/contracts", {"name": "a\x00b"}),
        ("/contracts", {"name": "ok", "description": "\x00"}),
    ],
)
def test_nul_characters_are_refused_at_the_edge(
    client: TestClient, user: Caller, path: str, body: dict[str, str]
) -> None:
    # PostgreSQL text cannot hold NUL: found by schemathesis as a 500 before validation refused it.
    r = client.post(f"{API}{path}", json=body, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST")


def test_nul_in_chat_and_questions_is_refused(client: TestClient, user: Caller) -> None:
    cid = client.post(f"{API}/contracts", json={"name": "n"}, headers=user.headers).json()["id"]
    assert (
        client.post(f"{API}/contracts/{cid}/messages", json={"content": "\x00"}, headers=user.headers).status_code
        == 422
    )
    r = client.post(
        f"{API}/contracts/{cid}/questions", json={"question": "q", "options": ["\x00"]}, headers=user.headers
    )
    assert r.status_code == 422
    assert client.get(f"{API}/contracts", params={"phase": "pl\x00an"}, headers=user.headers).status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/contracts", "GET, POST"),
        ("PUT", "/contracts/7f0c4f8e-0000-4000-8000-000000000000/tasks", "GET, POST"),
        # a literal path is its own resource, though /contracts/{contract_id} serves PATCH
        ("PATCH", "/contracts/batch", "POST"),
        ("PATCH", "/contracts/dashboard", "GET"),
    ],
)
def test_method_not_allowed_says_which_are(
    client: TestClient, user: Caller, method: str, path: str, allow: str
) -> None:
    r = client.request(method, f"{API}{path}", headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED"), r.text
    assert r.headers["Allow"] == allow
