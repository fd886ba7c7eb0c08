"""Integration fixtures: the FastAPI app in-process over the real test database."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db.async_pool import AsyncPooledDatabase
from makima.db.connection import PooledDatabase
from tests.conftest import Caller
from tests.declared import undeclared
from tests.integration.cfn_response import ResponseEndpoint, response_endpoint
from tests.integration.live import LiveServer


@pytest.fixture(scope="session")
def client(db: PooledDatabase) -> Iterator[TestClient]:
    """The app in-process. Every response it receives must be declared by the OpenAPI document (status
    and error code, ``tests/declared.py``): a test that meets an undeclared one fails at that request.
    Served as the local stack serves it: the heartbeat endpoints' statement sent from the event loop on
    an asynchronous pool (db/async_pool.py; the Lambda handlers' tests cover the worker-thread path)."""
    app = create_app(db, async_database=AsyncPooledDatabase(db.url, max_size=10))
    document = app.openapi()

    def declared(response: httpx.Response) -> None:
        response.read()
        problem = undeclared(
            document, response.request.method, response.request.url.path, response.status_code, response.content
        )
        assert problem is None, problem

    with TestClient(app, raise_server_exceptions=False) as c:
        c.event_hooks["response"] = [declared]
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


@pytest.fixture
def lambda_container(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    """The environment of a deployed function, pointed at the test database: a fresh container (its
    database and settings built again on first use), with the default settings."""
    from makima.config import get_settings
    from makima.lambda_support import runtime

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    monkeypatch.delenv("DB_HOST", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "makima-contracts")
    runtime.reset()
    get_settings.cache_clear()
    yield
    runtime.reset()
    get_settings.cache_clear()


Output = Callable[[], tuple[list[dict[str, Any]], dict[str, float]]]


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Iterator[Output]:
    """``output()``: what the handlers wrote since the last call, as CloudWatch would read it: the JSON
    log lines (the Powertools logger's stream, redirected here), and the EMF metrics printed to stdout
    (name -> value, summed)."""
    from makima.lambda_support import observability

    handler = observability.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    logged = io.StringIO()
    previous = handler.setStream(logged)

    def read() -> tuple[list[dict[str, Any]], dict[str, float]]:
        logs = [json.loads(line) for line in logged.getvalue().splitlines() if line.startswith("{")]
        logged.seek(0)
        logged.truncate()
        values: dict[str, float] = {}
        for line in capsys.readouterr().out.splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
                for metric in directive["Metrics"]:
                    values[metric["Name"]] = values.get(metric["Name"], 0.0) + sum(record[metric["Name"]])
        return logs, values

    try:
        yield read
    finally:
        handler.setStream(previous)


@pytest.fixture(scope="module")
def live(db: PooledDatabase) -> Iterator[LiveServer]:
    """The app under uvicorn, one per test module."""
    server = LiveServer(create_app(db)).start()
    yield server
    server.stop()


@pytest.fixture
def endpoint() -> Iterator[ResponseEndpoint]:
    """Where a custom-resource function PUTs its answer to CloudFormation, recorded."""
    with response_endpoint() as recorder:
        yield recorder
