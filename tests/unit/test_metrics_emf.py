"""The metrics' pure parts: which events count towards which counter, the EMF lines printed for them
(Powertools' documented way of testing metrics: the environment set, stdout captured, the JSON read
back), and the Prometheus rendering of a snapshot."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit
from prometheus_client.parser import text_string_to_metric_families

from makima.domain import metrics as counting
from makima.domain.monitor import from_log
from makima.domain.statuses import ContractStatus
from makima.lambda_support import metrics as emf
from makima.lambda_support.observability import metrics as shared_metrics
from makima.services import metrics as svc

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def powertools_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Makima")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "makima-contracts")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    yield
    shared_metrics.clear_metrics()


def blobs(out: str) -> list[dict[str, Any]]:
    """The EMF objects printed, one JSON document per line (a metric's values are a list: one count)."""
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def definition(blob: dict[str, Any]) -> dict[str, Any]:
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert isinstance(directive, dict)
    return directive


def event(type_: str, **payload: Any) -> dict[str, Any]:
    """An event as the outbox publisher hands it on: the monitor envelope of a log row."""
    row = {"id": 1, "type": type_, "contract_id": None, "owner_id": None, "payload": payload, "actor": "system"}
    return from_log({**row, "created_at": datetime(2026, 11, 24, tzinfo=UTC)})


# --- counting -------------------------------------------------------------------------------------------


def test_counter_events_name_the_cloudwatch_metrics() -> None:
    assert dict(counting.COUNTER_EVENTS) == {
        "phase_changed": "PhaseTransitions",
        "completion_detected": "CompletionDetections",
        "supervisor_restored": "SupervisorRestarts",
        "batch_operation": "BatchOperations",
    }
    # a restart request is not a restart
    assert "supervisor_restart_requested" not in counting.COUNTER_EVENTS


def test_events_are_counted_by_metric_and_others_ignored() -> None:
    # Given a publisher's batch: counted types, uncounted ones, and a row without a type
    events = [
        event("phase_changed", new_phase="execute"),
        event("phase_changed", new_phase="review"),
        event("completion_detected"),
        event("supervisor_restored", mode="crash"),
        event("supervisor_restart_requested"),
        event("task_spawned"),
        event("batch_operation", operation="pause"),
        {"id": 9},
    ]

    # Then each counter grows by its events, and only the counters that moved are listed
    assert counting.count_event_metrics(events) == {
        "PhaseTransitions": 2,
        "CompletionDetections": 1,
        "SupervisorRestarts": 1,
        "BatchOperations": 1,
    }
    assert counting.count_event_metrics([]) == {}
    assert counting.count_event_metrics([event("chat_message")]) == {}


def test_batch_operations_are_counted_per_operation() -> None:
    events = [
        event("batch_operation", operation="pause", affected_count=3, error_count=0, dry_run=False),
        event("batch_operation", operation="pause", affected_count=1, error_count=1, dry_run=True),
        event("batch_operation", operation="archive"),
        event("batch_operation"),
        event("phase_changed"),
    ]
    assert counting.count_batch_operations(events) == {"pause": 2, "archive": 1, "unknown": 1}


# --- EMF ------------------------------------------------------------------------------------------------


def test_event_metrics_are_printed_as_emf(capsys: pytest.CaptureFixture[str]) -> None:
    # Given events of every counted kind, batches of two operations among them
    events = [
        event("phase_changed"),
        event("phase_changed"),
        event("completion_detected"),
        event("supervisor_restored"),
        event("batch_operation", operation="pause"),
        event("batch_operation", operation="pause"),
        event("batch_operation", operation="archive"),
        event("question_asked"),
    ]

    # When they are emitted
    emf.emit_event_metrics(events)

    # Then one blob carries the three plain counters, dimensioned by service only
    plain, *batches = blobs(capsys.readouterr().out)
    d = definition(plain)
    assert d["Namespace"] == "Makima"
    assert d["Dimensions"] == [["service"]]
    assert {m["Name"]: m["Unit"] for m in d["Metrics"]} == {
        "CompletionDetections": MetricUnit.Count.value,
        "PhaseTransitions": MetricUnit.Count.value,
        "SupervisorRestarts": MetricUnit.Count.value,
    }
    assert plain["service"] == "makima-contracts"
    assert (plain["PhaseTransitions"], plain["CompletionDetections"], plain["SupervisorRestarts"]) == ([2], [1], [1])
    assert "BatchOperations" not in plain
    # And each operation's batches are a blob of their own, with the operation as a dimension
    by_operation = {b["operation"]: b for b in batches}
    assert set(by_operation) == {"pause", "archive"}
    for operation, n in {"pause": 2, "archive": 1}.items():
        b = by_operation[operation]
        d = definition(b)
        assert d["Namespace"] == "Makima"
        assert sorted(d["Dimensions"][0]) == ["operation", "service"]
        assert [m["Name"] for m in d["Metrics"]] == ["BatchOperations"]
        assert (b["BatchOperations"], b["service"]) == ([n], "makima-contracts")


def test_nothing_is_printed_when_no_counted_event_happened(capsys: pytest.CaptureFixture[str]) -> None:
    # When a publisher run handed on no counted event (or nothing at all)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even Powertools' "no metrics to publish"
        emf.emit_event_metrics([event("chat_message"), event("task_spawned")])
        emf.emit_event_metrics([])
        emf.emit_heartbeats(0)

    # Then nothing is printed: an empty blob would be noise in the logs
    assert capsys.readouterr().out == ""


def test_heartbeats_are_printed_as_emf(capsys: pytest.CaptureFixture[str]) -> None:
    emf.emit_heartbeats(37)

    [blob] = blobs(capsys.readouterr().out)
    d = definition(blob)
    assert (d["Namespace"], d["Dimensions"]) == ("Makima", [["service"]])
    assert d["Metrics"] == [{"Name": "SupervisorHeartbeats", "Unit": "Count"}]
    assert blob["SupervisorHeartbeats"] == [37]


def test_emitting_leaves_the_handlers_shared_metrics_alone(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a metric the running handler added to the container's shared Metrics, not yet flushed
    shared_metrics.add_metric(name="SupervisorsMarkedDead", unit=MetricUnit.Count, value=4)

    # When event metrics are emitted and flushed meanwhile
    emf.emit_event_metrics([event("phase_changed")])

    # Then only they are printed; the handler's metric waits for its own flush
    [blob] = blobs(capsys.readouterr().out)
    assert "SupervisorsMarkedDead" not in blob
    assert "SupervisorsMarkedDead" in shared_metrics.metric_set


def test_metrics_disabled_prints_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    emf.emit_heartbeats(3)
    emf.emit_event_metrics([event("phase_changed"), event("batch_operation", operation="pause")])
    assert capsys.readouterr().out == ""


# --- Prometheus rendering -------------------------------------------------------------------------------


def test_a_snapshot_renders_as_the_seven_metrics() -> None:
    # Given a snapshot
    snap = svc.MetricsSnapshot(
        contracts_by_status={s.value: 0 for s in ContractStatus} | {"active": 3, "completed": 2},
        contracts_stale=1,
        phase_transitions=7,
        completion_detections=2,
        supervisor_heartbeats=120,
        supervisor_restarts=1,
        batch_operations={"pause": 2},
    )

    # When it is rendered and parsed back as Prometheus would
    families = {f.name: f for f in text_string_to_metric_families(svc.exposition(snap).decode())}

    # Then it is the seed's seven metrics, of the right types, with exactly these values
    assert {n: f.type for n, f in families.items()} == {
        "contracts_by_status": "gauge",
        "contracts_stale_count": "gauge",
        "phase_transitions": "counter",
        "completion_detections": "counter",
        "supervisor_heartbeats": "counter",
        "supervisor_restarts": "counter",
        "batch_operations": "counter",
    }
    by_status = {s.labels["status"]: s.value for s in families["contracts_by_status"].samples}
    assert by_status == {s.value: 0 for s in ContractStatus} | {"active": 3, "completed": 2}
    assert families["contracts_stale_count"].samples[0].value == 1
    totals = {
        s.name: s.value
        for f in families.values()
        if f.type == "counter"
        for s in f.samples
        if s.name.endswith("_total") and not s.labels
    }
    assert totals == {
        "phase_transitions_total": 7,
        "completion_detections_total": 2,
        "supervisor_heartbeats_total": 120,
        "supervisor_restarts_total": 1,
    }
    [batch] = families["batch_operations"].samples
    assert (batch.name, batch.labels, batch.value) == ("batch_operations_total", {"operation": "pause"}, 2)
    assert svc.CONTENT_TYPE.startswith("text/plain")
