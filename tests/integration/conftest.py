"""Integration fixtures: the FastAPI app in-process over the real test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db.connection import PooledDatabase
from tests.conftest import Caller


@pytest.fixture(scope="session")
def client(db: PooledDatabase) -> Iterator[TestClient]:
    with TestClient(create_app(db), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def user(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller()


@pytest.fixture
def new_contract(client: TestClient) -> Callable[..., dict[str, Any]]:
    def make(caller: Caller, **fields: Any) -> dict[str, Any]:
        body = {"name": "c", "contract_type": "simple", **fields}
        r = client.post("/api/v1/contracts", json=body, headers=caller.headers)
        assert r.status_code == 201, r.text
        return dict(r.json())

    return make
