"""The monitor envelopes of accepted heartbeats are built only when somebody reads them (issue 15).

The heartbeat endpoints hand the event sink the envelopes of the heartbeats they accepted. With no
monitor open, neither sink reads them (the local pump checks its hub, the Lambda sink counts them and
asks whether anyone watches), and building them was a sixth of a 100-heartbeat batch's server CPU. The
sink still gets how many there were, and the envelopes, when read, are the ones it always got.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from makima.db.connection import PooledDatabase
from makima.domain import monitor as monitor_event
from makima.domain.supervisors import Heartbeat, SupervisorState
from makima.services import contracts as contracts_svc
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller


def _supervised(db: PooledDatabase, owner: Caller, n: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    out = []
    for i in range(n):
        contract = contracts_svc.create_contract(
            db, owner.principal, name=f"envelopes {i}", description="", contract_type="simple", phase_guard=False
        )
        task_id = supervisors_svc.start_supervisor(db, owner.principal, contract.id, daemon_id=None).supervisor.task_id
        out.append((contract.id, task_id))
    return out


def _beats(supervised: list[tuple[uuid.UUID, uuid.UUID]], activity: str) -> list[Heartbeat]:
    return [
        Heartbeat(
            task_id=task_id,
            contract_id=contract_id,
            state=SupervisorState.WORKING,
            phase="plan",
            current_activity=activity,
            progress=40,
            timestamp=datetime.now(UTC),
        )
        for contract_id, task_id in supervised
    ]


@pytest.fixture
def owner(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller()


def test_a_sink_that_only_counts_builds_no_envelope(
    db: PooledDatabase, owner: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervised = _supervised(db, owner, 3)
    supervisors_svc.ingest_heartbeats(db, owner.principal, _beats(supervised, "first"))  # the state is set
    built: list[dict[str, Any]] = []
    real = monitor_event.heartbeat

    def counting(**fields: Any) -> dict[str, Any]:
        built.append(real(**fields))
        return built[-1]

    monkeypatch.setattr(monitor_event, "heartbeat", counting)
    told: list[tuple[int, bool]] = []

    def sink(events: Sequence[Mapping[str, Any]], logged: bool) -> None:
        told.append((len(events), logged))  # as the local pump with no monitor open: counts, reads nothing

    answers = supervisors_svc.ingest_heartbeats(db, owner.principal, _beats(supervised, "steady"), monitor=sink)
    assert all(a.accepted for a in answers)
    assert told == [(3, False)]
    assert built == []


def test_the_envelopes_read_are_those_of_the_accepted_heartbeats(db: PooledDatabase, owner: Caller) -> None:
    supervised = _supervised(db, owner, 2)
    beats = _beats(supervised, "reading")
    stranger = Heartbeat(
        task_id=uuid.uuid4(), contract_id=supervised[0][0], state=SupervisorState.WORKING, phase="plan",
        timestamp=datetime.now(UTC),
    )  # fmt: skip
    got: list[Sequence[Mapping[str, Any]]] = []
    answers = supervisors_svc.ingest_heartbeats(
        db, owner.principal, [*beats, stranger], monitor=lambda events, logged: got.append(events)
    )
    assert [a.accepted for a in answers] == [True, True, False]
    (events,) = got
    assert len(events) == 2
    listed = list(events)
    assert listed == [
        monitor_event.heartbeat(
            contract_id=contract_id,
            owner_id=owner.principal.user_id,
            supervisor_task_id=task_id,
            state="working",
            activity="reading",
            progress=40,
            at=beat.timestamp,
            actor=owner.principal.actor,
        )
        for (contract_id, task_id), beat in zip(supervised, beats, strict=True)
    ]
    assert events[0] is listed[0]  # read again: the same envelopes, built once
    assert list(events[:1]) == listed[:1]
    assert [e["type"] for e in events] == [monitor_event.HEARTBEAT] * 2
