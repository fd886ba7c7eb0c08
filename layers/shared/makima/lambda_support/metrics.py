"""The seed's counters as CloudWatch metrics (EMF on stdout), for the Lambda call sites that see them happen.

``GET /metrics`` answers Prometheus with totals read from the database; CloudWatch instead gets the
increments, printed as Embedded Metric Format lines that CloudWatch Logs turns into metrics without an
API call. The outbox publisher calls ``emit_event_metrics`` with the events it hands on (each event is
published once, so each is counted once), the heartbeats handler calls ``emit_heartbeats`` with the
number it accepted (heartbeats are not events).

Why not the container's ``observability.metrics``: ``Metrics`` instances share one metric set per
process, and these functions flush at once (their callers are not wrapped in ``log_metrics``); a flush
of the shared set would also publish, early and under these dimensions, whatever the running handler
had added. ``EphemeralMetrics`` is Powertools' isolated instance.

BatchOperations carries the batch's ``operation`` as a dimension (metadata would not be one: it could
not be graphed or alarmed on per operation), and EMF gives every metric of a blob the same dimensions,
so each operation is a blob of its own. Powertools' ``single_metric`` is meant for this, but it prints
even when ``POWERTOOLS_METRICS_DISABLED`` is set and swallows errors raised in its block; an
``EphemeralMetrics`` with the extra dimension makes the same blob and behaves like the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from makima.domain.metrics import BATCH_OPERATION_EVENT, COUNTER_EVENTS, count_batch_operations, count_event_metrics
from makima.lambda_support.observability import NAMESPACE, SERVICE

HEARTBEATS_METRIC = "SupervisorHeartbeats"
BATCH_OPERATIONS_METRIC = COUNTER_EVENTS[BATCH_OPERATION_EVENT]


def _emit(counts: Mapping[str, int], **dimensions: str) -> None:
    """One EMF blob with these counters, dimensioned by service (and ``dimensions``); nothing at all
    when none moved, so an idle publisher run prints no empty blob and no Powertools warning."""
    moved = {name: n for name, n in counts.items() if n > 0}
    if not moved:
        return
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    for dimension, value in dimensions.items():
        metrics.add_dimension(name=dimension, value=value)
    for name, n in sorted(moved.items()):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=n)
    metrics.flush_metrics()


def emit_event_metrics(events: Sequence[Mapping[str, Any]]) -> None:
    """Count the events (monitor envelopes ``{"type", "data", ...}``, as the publisher hands them on)
    into PhaseTransitions, CompletionDetections, SupervisorRestarts (one blob) and BatchOperations (one
    blob per operation, with the ``operation`` dimension), and print them as EMF."""
    counts = count_event_metrics(events)
    counts.pop(BATCH_OPERATIONS_METRIC, None)
    _emit(counts)
    for operation, n in sorted(count_batch_operations(events).items()):
        _emit({BATCH_OPERATIONS_METRIC: n}, operation=operation)


def emit_heartbeats(n: int) -> None:
    """SupervisorHeartbeats += ``n`` (the heartbeats one request accepted), printed as EMF."""
    _emit({HEARTBEATS_METRIC: n})
