"""A contract driven over HTTP the way a supervisor would drive it; shared by integration (TestClient)
and e2e (the local stack) tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from starlette.testclient import TestClient


class Driver:
    """One contract, created on construction. ``client`` is an httpx client or Starlette's TestClient
    (an ``httpx2`` client once ``httpx2`` is installed, as the ``mcp`` SDK brings it: Starlette prefers it);
    ``prefix`` is what goes before ``/contracts`` on it."""

    def __init__(
        self,
        client: httpx.Client | TestClient,
        headers: dict[str, str],
        contract_type: str,
        prefix: str = "/api/v1",
        **fields: Any,
    ) -> None:
        self.client, self.headers, self.prefix = client, headers, prefix
        r = client.post(
            f"{prefix}/contracts", json={"name": "drive", "contract_type": contract_type, **fields}, headers=headers
        )
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]

    def url(self, suffix: str = "") -> str:
        return f"{self.prefix}/contracts/{self.id}{suffix}"

    def get(self) -> dict[str, Any]:
        return dict(self.client.get(self.url(), headers=self.headers).json())

    def post(self, suffix: str, body: dict[str, Any] | None = None, expect: int = 200) -> dict[str, Any]:
        r = self.client.post(self.url(suffix), json=body, headers=self.headers)
        assert r.status_code == expect, r.text
        return dict(r.json())

    def start(self) -> None:
        self.post("/tasks", {"name": "supervisor", "is_supervisor": True}, expect=201)

    def task(self, name: str) -> str:
        return str(self.post("/tasks", {"name": name}, expect=201)["id"])

    def finish(self, tid: str) -> None:
        self.post(f"/tasks/{tid}/status", {"status": "completed"})

    def deliver(self, deliverable: str) -> dict[str, Any]:
        return dict(self.post("/deliverables", {"deliverable_id": deliverable})["contract"])

    def readiness(self) -> dict[str, Any]:
        r = self.client.get(self.url("/phase-readiness"), headers=self.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def events(self) -> list[dict[str, Any]]:
        r = self.client.get(self.url("/events"), params={"limit": 1000}, headers=self.headers)
        return list(r.json()["events"])
