"""Contract types as data: a team's own type stored through the API, validated, revised, and used."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.domain.principals import Role
from tests.conftest import Caller
from tests.drivers import Driver

pytestmark = pytest.mark.integration
API = "/api/v1"
EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "docs" / "examples" / "code-review.json").read_text())


def custom(name: str, **changes: Any) -> dict[str, Any]:
    return {**EXAMPLE, "name": name, **changes}


@pytest.fixture
def admin_caller(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller(role=Role.ADMIN)


def test_the_documented_example_is_stored_and_drives_a_contract(client: TestClient, admin_caller: Caller) -> None:
    name = "code-review"
    r = client.put(f"{API}/contract-types/{name}", json=custom(name), headers=admin_caller.headers)
    assert r.status_code == 200, r.text
    assert client.get(f"{API}/contract-types/{name}", headers=admin_caller.headers).json()["version"] == 1
    d = Driver(client, admin_caller.headers, name)
    d.start()
    d.deliver("summary")
    assert d.get()["phase"] == "test"
    unit = d.task("run-unit-tests")
    d.finish(unit)
    d.deliver("test-report")
    assert d.readiness()["missing"] == ["Task: run-integration-tests"]
    d.finish(d.task("run-integration-tests"))
    assert d.get()["phase"] == "review"
    d.deliver("review-comments")
    assert d.readiness()["missing"] == ["1 more task to complete (0 of 1 done)"]
    d.finish(d.task("write-review"))
    assert d.get()["status"] == "completed"


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda t: t["phases"][0]["gate"].update(required_deliverables=["nope"]), "unknown deliverables"),
        (lambda t: t["phases"][0]["gate"].update(validator="__import__('os').system"), "unknown gate validator"),
        (lambda t: t["phases"].append(t["phases"][0]), "phase ids must be unique"),
        (lambda t: t.update(phases=[]), "at least 1"),
        (lambda t: t["phases"][1]["gate"]["tasks"].pop("names"), "needs names"),
    ],
)
def test_invalid_types_are_refused_with_the_reason(
    client: TestClient, admin_caller: Caller, mutate: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    body = json.loads(json.dumps(custom("broken")))
    mutate(body)
    r = client.put(f"{API}/contract-types/broken", json=body, headers=admin_caller.headers)
    assert r.status_code == 422, r.text
    assert fragment in json.dumps(r.json()["error"])
    assert client.get(f"{API}/contract-types/broken", headers=admin_caller.headers).status_code == 404


def test_revisions_raise_the_version_and_keep_phases_in_use(client: TestClient, admin_caller: Caller) -> None:
    name = "revisable"
    url = f"{API}/contract-types/{name}"
    assert client.put(url, json=custom(name), headers=admin_caller.headers).status_code == 200
    assert client.put(url, json=custom(name), headers=admin_caller.headers).status_code == 409  # same version
    d = Driver(client, admin_caller.headers, name)
    d.start()
    d.deliver("summary")  # now in "test"
    without_test = custom(name, version=2, phases=[EXAMPLE["phases"][0], EXAMPLE["phases"][2]])
    r = client.put(url, json=without_test, headers=admin_caller.headers)
    assert (r.status_code, r.json()["error"]["details"]["phases_in_use"]) == (409, ["test"])
    renamed = custom(name, version=2, description="second edition")
    assert client.put(url, json=renamed, headers=admin_caller.headers).json()["description"] == "second edition"


def test_built_in_types_and_non_admins_are_refused(client: TestClient, admin_caller: Caller, user: Caller) -> None:
    r = client.put(f"{API}/contract-types/simple", json=custom("simple", version=99), headers=admin_caller.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "CONFLICT")
    r = client.put(f"{API}/contract-types/mine", json=custom("mine"), headers=user.headers)
    assert r.status_code == 403
    r = client.put(f"{API}/contract-types/other", json=custom("mine"), headers=admin_caller.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "BAD_REQUEST")
