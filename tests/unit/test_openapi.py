"""The OpenAPI document says what each operation answers (issue 13, defect 8): every status and error
code, generated from the error classes, the input formats, and links from creations to their uses.
Built in-process (no database: the document needs none)."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from makima.api.app import create_app
from makima.db.connection import Database
from tests.declared import undeclared

API = "/api/v1"


@cache
def document() -> dict[str, Any]:
    database: Database = None  # type: ignore[assignment]  # building the document never connects
    return create_app(database).openapi()


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, item in document()["paths"].items() for m, op in item.items()]


def codes(method: str, path: str, status: int) -> set[str]:
    response = document()["paths"][path][method.lower()]["responses"][str(status)]
    return set(response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"])


def test_every_authenticated_operation_declares_what_any_request_can_get() -> None:
    # Given every operation but the public health check
    for method, path, op in operations():
        if path == f"{API}/health":
            continue
        # Then each declares the refusals any request may meet, each status with its codes
        assert codes(method, path, 401) == {"UNAUTHORIZED"}, (method, path)
        assert codes(method, path, 422) >= {"INVALID_REQUEST"}, (method, path)
        assert codes(method, path, 429) == {"RATE_LIMITED"}, (method, path)
        assert "Retry-After" in op["responses"]["429"]["headers"], (method, path)
        assert codes(method, path, 503) >= {"DATABASE_UNAVAILABLE", "DATABASE_TIMEOUT"}, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("POST", "/contracts", 400, {"VALIDATION_FAILED"}),
        ("POST", "/contracts/{contract_id}/status", 400, {"INVALID_TRANSITION"}),
        ("POST", "/contracts/{contract_id}/status", 409, {"VERSION_CONFLICT"}),
        ("POST", "/contracts/{contract_id}/phase", 400, {"INVALID_TRANSITION", "VALIDATION_FAILED"}),
        ("POST", "/contracts/{contract_id}/phase", 409, {"VERSION_CONFLICT", "PHASE_GUARD_REQUIRED"}),
        ("POST", "/contracts/{contract_id}/deliverables", 400, {"INVALID_DELIVERABLE"}),
        ("POST", "/contracts/{contract_id}/tasks/{task_id}/status", 400, {"INVALID_TRANSITION"}),
        ("GET", "/contracts/{contract_id}", 404, {"CONTRACT_NOT_FOUND"}),
        ("POST", "/contracts/{contract_id}/supervisor/sync", 503, {"SUPERVISOR_DEAD"}),
        ("GET", "/contracts/{contract_id}/supervisor/status", 404, {"SUPERVISOR_NOT_FOUND"}),
        ("POST", "/contracts/batch", 404, {"FEATURE_DISABLED"}),
    ],
)
def test_the_seed_codes_are_declared_on_the_operations_that_answer_them(
    method: str, path: str, status: int, expected: set[str]
) -> None:
    assert codes(method, f"{API}{path}", status) >= expected


def test_codes_a_valid_request_can_still_get_are_named() -> None:
    # A move the contract's status forbids is not an input error: the document says which codes are so
    response = document()["paths"][f"{API}/contracts/{{contract_id}}/status"]["post"]["responses"]["400"]
    assert response["x-refused-beyond-schema"] == ["INVALID_TRANSITION"]
    assert "BAD_REQUEST" in codes("POST", f"{API}/contracts/{{contract_id}}/status", 400)


def test_input_formats_are_in_the_schema() -> None:
    params = {p["name"]: p for p in document()["paths"][f"{API}/contracts"]["get"]["parameters"]}
    # a duration's format, so a fuzzer (or a client) knows "00000000000000000000" is not one
    threshold = next(s for s in params["threshold"]["schema"]["anyOf"] if s.get("type") == "string")
    assert threshold["pattern"] == "^[0-9]{1,5}[smhdwSMHDW]?$"
    # a header cannot be null: the status view is one of two values
    assert params["X-Makima-Status"]["schema"]["enum"] == ["legacy", "enhanced"]
    # bounds of optional numbers are JSON Schema's (minimum/maximum), not pydantic's names
    wait = document()["components"]["schemas"]["SyncRequest"]["properties"]["wait_seconds"]["anyOf"][0]
    assert (wait["minimum"], wait["maximum"]) == (0, 25)


def test_creations_link_to_the_operations_on_what_they_created() -> None:
    paths = document()["paths"]
    ids = {op["operationId"]: (m.upper(), p) for p, item in paths.items() for m, op in item.items()}

    def linked(path: str, status: str) -> dict[tuple[str, str], dict[str, str]]:
        links = paths[f"{API}{path}"]["post"]["responses"][status]["links"]
        return {ids[link["operationId"]]: link["parameters"] for link in links.values()}

    created = linked("/contracts", "201")
    assert created[("GET", f"{API}/contracts/{{contract_id}}")] == {"contract_id": "$response.body#/id"}
    assert ("POST", f"{API}/contracts/{{contract_id}}/supervisor") in created
    assert ("POST", f"{API}/contracts/{{contract_id}}/tasks") in created
    # right after POST /contracts there is no supervisor to ask about: those come from its start
    assert ("GET", f"{API}/contracts/{{contract_id}}/supervisor/status") not in created
    started = linked("/contracts/{contract_id}/supervisor", "201")
    assert started[("GET", f"{API}/contracts/{{contract_id}}/supervisor/status")] == {
        "contract_id": "$request.path.contract_id"
    }
    task = linked("/contracts/{contract_id}/tasks", "201")
    assert task[("POST", f"{API}/contracts/{{contract_id}}/tasks/{{task_id}}/status")] == {
        "contract_id": "$response.body#/contract_id",
        "task_id": "$response.body#/id",
    }


def test_an_undeclared_answer_is_named() -> None:
    status = f"{API}/contracts/7f0c4f8e-0000-4000-8000-000000000000/status"
    body = b'{"error": {"code": "INVALID_TRANSITION", "message": "", "details": {}}}'
    assert undeclared(document(), "POST", status, 400, body) is None
    wrong = b'{"error": {"code": "INVALID_DELIVERABLE", "message": "", "details": {}}}'
    assert "does not declare" in str(undeclared(document(), "POST", status, 400, wrong))
    assert "does not declare" in str(undeclared(document(), "POST", status, 402, b"{}"))
    # a literal path is its own operation, not /contracts/{contract_id}
    assert (
        undeclared(document(), "GET", f"{API}/contracts/dashboard", 404, b'{"error": {"code": "FEATURE_DISABLED"}}')
        is None
    )
