"""The seed's seven metrics: a database snapshot rendered for Prometheus, and the event → metric mapping
the CloudWatch (EMF) side counts with.

Two views of the same counters, kept apart on purpose:

- ``GET /metrics`` (Prometheus) reads totals from the database on every scrape (``db/metrics.py``), so
  the numbers are right whichever Lambda container answers and survive cold starts;
- CloudWatch gets increments: the outbox publisher counts the events it hands on
  (``count_event_metrics``), and ``lambda_support/metrics.py`` prints them as EMF.

Both name their counters after the same event types (``COUNTER_EVENTS``), so they cannot drift apart.
Nothing here does I/O except ``snapshot``; rendering and counting are pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from makima.db import metrics as metrics_sql
from makima.db.connection import Database
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus
from makima.errors import Forbidden

# The content type of the exposition (Prometheus text format), for the HTTP answer.
CONTENT_TYPE = CONTENT_TYPE_LATEST

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
    """``batch_operation`` events per ``payload.operation`` (``"unknown"`` when missing), for the
    BatchOperations counter's ``operation`` dimension — the same label ``GET /metrics`` uses."""
    counts: Counter[str] = Counter()
    for e in events:
        if e.get("type") == BATCH_OPERATION_EVENT:
            payload = e.get("payload") or {}
            counts[str(payload.get("operation") or "unknown")] += 1
    return dict(counts)


@dataclass(frozen=True)
class MetricsSnapshot:
    """The seven metrics at one instant (one SQL statement). ``contracts_by_status`` lists all nine
    statuses, 0 for those no contract is in, so a status never vanishes from a graph."""

    contracts_by_status: dict[str, int]
    contracts_stale: int
    phase_transitions: int
    completion_detections: int
    supervisor_heartbeats: int
    supervisor_restarts: int
    batch_operations: dict[str, int] = field(default_factory=dict)


def snapshot(db: Database, principal: Principal, *, stale_threshold: timedelta) -> MetricsSnapshot:
    """The fleet-wide metrics; admins only (they count every owner's contracts)."""
    if not principal.is_admin:
        raise Forbidden("admin role required")
    with db.connection() as conn:
        raw = metrics_sql.snapshot(conn, stale_threshold)
    by_status = {s.value: 0 for s in ContractStatus} | raw["contracts_by_status"]
    return MetricsSnapshot(
        contracts_by_status=by_status,
        contracts_stale=raw["contracts_stale"],
        phase_transitions=raw["phase_transitions"],
        completion_detections=raw["completion_detections"],
        supervisor_heartbeats=raw["supervisor_heartbeats"],
        supervisor_restarts=raw["supervisor_restarts"],
        batch_operations=raw["batch_operations"],
    )


class SnapshotCollector(Collector):
    """Yields a snapshot as metric families. A custom collector (not Gauge/Counter objects) because the
    values are not this process's: they are read fresh per scrape, and a counter object would only
    allow increments from whatever this container happened to see."""

    def __init__(self, snap: MetricsSnapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        by_status = GaugeMetricFamily(
            "contracts_by_status", "Contracts per status (all nine statuses, 0 when none).", labels=["status"]
        )
        for status, n in sorted(s.contracts_by_status.items()):
            by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily(
            "contracts_stale_count",
            "Contracts not completed/failed/archived with no activity for longer than stale_threshold_minutes.",
            value=s.contracts_stale,
        )
        yield CounterMetricFamily(
            "phase_transitions_total",
            "Phase changes, manual and automatic (phase_changed events).",
            s.phase_transitions,
        )
        yield CounterMetricFamily(
            "completion_detections_total",
            "Terminal-phase gates found met (completion_detected events).",
            s.completion_detections,
        )
        yield CounterMetricFamily(
            "supervisor_heartbeats_total",
            "Supervisor heartbeats accepted (sum of supervisor_states.heartbeat_count; not in the event log).",
            s.supervisor_heartbeats,
        )
        yield CounterMetricFamily(
            "supervisor_restarts_total",
            "Supervisors restored by a daemon under a new generation (supervisor_restored events).",
            s.supervisor_restarts,
        )
        batches = CounterMetricFamily(
            "batch_operations_total",
            "Batch operations run, per operation (batch_operation events).",
            labels=["operation"],
        )
        for operation, n in sorted(s.batch_operations.items()):
            batches.add_metric([operation], n)
        yield batches


def exposition(snap: MetricsSnapshot) -> bytes:
    """The snapshot in the Prometheus text format. A fresh registry per scrape: the default one would
    add this process's own collectors (GC, platform), meaningless for a fleet of Lambda containers."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)
