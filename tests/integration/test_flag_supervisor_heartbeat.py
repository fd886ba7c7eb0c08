"""The ``supervisor_heartbeat`` flag switched off at runtime, on a running app, through the flags file
an operator uses (``flags_max_age = 0``: a switch is seen on the next call). Its whole feature goes off
- the heartbeat endpoints (one and batched), the heartbeat history, sync (which waits for a heartbeat)
and the timeout sweep - and nothing else changes: contracts, persisted state and restoration keep
working. Switched back on, heartbeats flow again and no supervisor is marked dead for having been
silent while it could not beat. (The other flags: tests/integration/test_flags_runtime.py and
tests/integration/test_contract_guarantees.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import Settings
from makima.db.connection import PooledDatabase, transaction
from makima.flags import build_flags
from makima.local.scheduler import Job, jobs_for
from tests.conftest import Caller
from tests.integration.test_supervisor_lifecycle import NoPublisher
from tests.integration.test_supervisors import API, Sup, start

pytestmark = pytest.mark.integration


@dataclass
class Running:
    client: TestClient
    sweep: Job
    flags_file: Path

    def switch(self, on: bool) -> None:
        self.flags_file.write_text(f"[feature_flags]\nsupervisor_heartbeat = {str(on).lower()}\n", encoding="utf-8")


@pytest.fixture
def running(db: PooledDatabase, tmp_path: Path) -> Iterator[Running]:
    flags_file = tmp_path / "flags.toml"
    settings = Settings(flags_file=str(flags_file), flags_max_age=0)
    flags = build_flags(settings)
    app = create_app(db, settings=settings)
    (sweep,) = [j for j in jobs_for(db, settings, NoPublisher(), flags) if j.name == "supervisor_timeouts"]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Running(client, sweep, flags_file)
    # The sweep's memory of the flag is one row for the whole database: leave no grace for other tests.
    with transaction(db) as conn:
        conn.execute("DELETE FROM scheduled_job_state")


def _disabled(response: Any) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "FEATURE_DISABLED"
    assert response.json()["error"]["details"] == {"feature": "supervisor_heartbeat"}


def _batch(sup: Sup) -> Any:
    body = {
        "heartbeats": [
            {
                "task_id": sup.task_id,
                "contract_id": sup.contract_id,
                "state": "working",
                "phase": "plan",
                "timestamp": datetime.now(UTC).isoformat(),
            }
        ],
        "daemon_id": sup.daemon_id,
    }
    return sup.client.post(f"{API}/supervisors/heartbeats", json=body, headers=sup.caller.headers)


def _silent_for_an_hour(database_url: str, sup: Sup) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE supervisor_states SET last_heartbeat_at = now() - interval '1 hour' WHERE task_id = %s",
            (sup.task_id,),
        )


def _swept(r: Running) -> set[str]:
    result = r.sweep.run()
    assert isinstance(result, list)
    return {str(row["task_id"]) for row in result}


def test_supervisor_heartbeat_off_at_runtime_turns_off_its_whole_feature_and_nothing_else(
    running: Running, make_caller: Any, database_url: str
) -> None:
    user: Caller = make_caller()
    c = running.client
    sup = start(c, user, name="flag-hb")
    # On: heartbeats, the batch, the history and sync all answer
    assert sup.beat().status_code == 200
    assert _batch(sup).status_code == 200
    assert c.get(sup.url("/supervisor/heartbeats"), headers=user.headers).status_code == 200

    # When the flag is switched off
    running.switch(False)
    # Then every part of the feature is off ...
    _disabled(sup.beat())
    _disabled(_batch(sup))
    _disabled(c.get(sup.url("/supervisor/heartbeats"), headers=user.headers))
    _disabled(c.post(sup.url("/supervisor/sync"), json={"wait_seconds": 0}, headers=user.headers))
    # ... including the sweep: a supervisor silent for an hour (it could not beat) is not marked dead
    _silent_for_an_hour(database_url, sup)
    assert sup.task_id not in _swept(running)
    assert sup.status()["alive"] is True
    # ... and nothing else changed: contracts, supervisor status and persisted state still work
    other = c.post(f"{API}/contracts", json={"name": "unrelated"}, headers=user.headers)
    assert other.status_code == 201, other.text
    assert other.json()["status"] == "created"
    assert c.post(f"{API}/contracts/{other.json()['id']}/deliverables", json={"deliverable_id": "plan-document"},
                  headers=user.headers).status_code == 200  # fmt: skip
    sup.save(seq=1, conversation_append=[{"role": "assistant", "content": "still here"}])
    assert sup.status()["state"] == "working"

    # When it is switched back on, heartbeats flow again, and the sweep gives the silent supervisor a
    # full timeout of grace from the moment it last saw the flag off
    running.switch(True)
    assert sup.task_id not in _swept(running)
    assert sup.status()["alive"] is True
    assert sup.beat().status_code == 200
    assert _batch(sup).status_code == 200
    history = c.get(sup.url("/supervisor/heartbeats"), headers=user.headers)
    assert history.status_code == 200
    assert len(history.json()["heartbeats"]) == 4  # the two before the switch and the two after
    assert (
        timedelta(0)
        <= datetime.now(UTC) - datetime.fromisoformat(sup.status()["last_heartbeat"])
        < timedelta(minutes=1)
    )
