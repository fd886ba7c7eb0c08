"""The seed's seven metrics: a database snapshot rendered for Prometheus, and the event → metric mapping
the CloudWatch (EMF) side counts with.

Two views of the same counters, kept apart on purpose:

- ``GET /metrics`` (Prometheus) reads totals from the database on every scrape (``db/metrics.py``), so
  the numbers are right whichever Lambda container answers and survive cold starts;
- CloudWatch gets increments: the outbox publisher counts the events it hands on
  (``domain/metrics.count_event_metrics``), and ``lambda_support/metrics.py`` prints them as EMF.

Both count the same event types (``domain/metrics.COUNTER_EVENTS``; the snapshot's SQL names them too).
Nothing here does I/O except ``snapshot``; rendering and counting are pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from makima.db import metrics as metrics_sql
from makima.db.connection import Database
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus
from makima.services.common import require_scraper

# The content type of the exposition (Prometheus text format), for the HTTP answer.
CONTENT_TYPE = CONTENT_TYPE_LATEST


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
    """The fleet-wide metrics; admins and metrics tokens only (they count every owner's contracts)."""
    require_scraper(principal)
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
