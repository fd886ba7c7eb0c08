"""Which events the CloudWatch counters count: pure, so the Lambda side that emits them (EMF) does not
import the Prometheus rendering of ``services/metrics.py``. The events are monitor envelopes
(``domain/monitor.from_log``), as the outbox publisher hands them on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

BATCH_OPERATION_EVENT = "batch_operation"

# Event type -> the CloudWatch metric counting it. ``supervisor_restored`` marks a completed restart (a
# daemon restored the supervisor under a new generation); ``supervisor_restart_requested`` is only the
# request, which may never be acted on, so it is not counted. Heartbeats are not events (they would
# flood the log): they are counted where they are ingested (``lambda_support.metrics.emit_heartbeats``).
COUNTER_EVENTS: Mapping[str, str] = MappingProxyType(
    {
        "phase_changed": "PhaseTransitions",
        "completion_detected": "CompletionDetections",
        "supervisor_restored": "SupervisorRestarts",
        BATCH_OPERATION_EVENT: "BatchOperations",
    }
)


def count_event_metrics(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How much each CloudWatch counter grows for these events (``{"type": ...}`` dicts, as the outbox
    holds them): metric name -> count, only the counters that moved. Other event types are ignored."""
    counts = Counter(COUNTER_EVENTS[e["type"]] for e in events if e.get("type") in COUNTER_EVENTS)
    return dict(counts)


def count_batch_operations(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``batch_operation`` events per ``data.operation`` (``"unknown"`` when missing), for the
    BatchOperations counter's ``operation`` dimension — the same label ``GET /metrics`` uses."""
    counts: Counter[str] = Counter()
    for e in events:
        if e.get("type") == BATCH_OPERATION_EVENT:
            data = e.get("data") or {}
            counts[str(data.get("operation") or "unknown")] += 1
    return dict(counts)
