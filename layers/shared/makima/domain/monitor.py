"""What a monitor receives (seed 5.1): the event envelope, the filter message, and who gets what.

One envelope for every event type, so clients parse one shape and dispatch on ``type``::

    {"id": "1234", "type": "status_changed", "contract_id": "…", "timestamp": "…", "actor": "…",
     "data": {"old_status": "active", "new_status": "paused", "reason": "…"}}

``id`` is the event log's id (as a string) for every logged event: it increases with each event,
and it is what a reconnecting monitor sends back as ``last_event_id``. Heartbeats are not logged
(there are far too many); theirs is ``hb:<supervisor task id>:<sent-at in µs>``, unique and
stable, so a client de-duplicates every message by ``id`` alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from makima.domain.statuses import ContractStatus

# The eight event types of seed 5.1. Every other logged type (contract_created, task_spawned, …) is
# delivered too, in the same envelope; these are the ones with fields the seed fixes.
SEED_EVENT_TYPES = (
    "status_changed",
    "phase_changed",
    "supervisor_state_changed",
    "heartbeat",
    "stale_detected",
    "task_completed",
    "deliverable_completed",
    "question_asked",
)
HEARTBEAT = "heartbeat"
STALE_DETECTED = "stale_detected"

# The fields each seed type carries in ``data`` (more may be added, none removed: the shape is stable).
SEED_FIELDS: dict[str, tuple[str, ...]] = {
    "status_changed": ("old_status", "new_status", "reason"),
    "phase_changed": ("old_phase", "new_phase"),
    "supervisor_state_changed": ("supervisor_task_id", "old_state", "new_state"),
    "heartbeat": ("supervisor_task_id", "state", "activity", "progress"),
    # the seed names it stale_duration (seconds); stale_duration_secs is the name this API shipped first
    "stale_detected": ("last_activity", "stale_duration", "stale_duration_secs"),
    "task_completed": ("task_id", "task_name", "success"),
    "deliverable_completed": ("phase", "deliverable_id"),
    "question_asked": ("question_id", "question", "question_type"),
}

# An event bigger than this is cut down to its seed fields: an API Gateway WebSocket frame is at most
# 32 KB, and a monitor needs the event, not the whole payload (it can fetch the contract).
MAX_EVENT_BYTES = 8_000
# The most contract ids one filter may name.
MAX_CONTRACT_IDS = 1000


def _iso(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


def from_log(row: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope of a ``contract_events`` row."""
    data = {k: v for k, v in dict(row["payload"]).items() if k != "contract_id"}
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "contract_id": str(row["contract_id"]) if row["contract_id"] is not None else None,
        "timestamp": _iso(row["created_at"]),
        "actor": row["actor"],
        "data": data,
        "owner_id": str(row["owner_id"]) if row["owner_id"] is not None else None,
    }


def heartbeat(
    *,
    contract_id: UUID | str,
    supervisor_task_id: UUID | str,
    state: str,
    activity: str,
    progress: int,
    at: datetime,
    actor: str,
    owner_id: UUID | str,
) -> dict[str, Any]:
    return {
        "id": f"hb:{supervisor_task_id}:{round(at.timestamp() * 1_000_000)}",
        "type": HEARTBEAT,
        "contract_id": str(contract_id),
        "timestamp": _iso(at),
        "actor": actor,
        "data": {
            "supervisor_task_id": str(supervisor_task_id),
            "state": state,
            "activity": activity,
            "progress": progress,
        },
        "owner_id": str(owner_id),
    }


def log_id(event: Mapping[str, Any]) -> int | None:
    """The event log id of an envelope; None for events that are not logged (heartbeats)."""
    raw = event.get("id")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


class MonitorFilter(BaseModel):
    """The filter message of seed 5.1. Absent lists mean "any"; an empty list matches nothing."""

    model_config = ConfigDict(extra="forbid")

    contract_ids: list[UUID] | None = Field(default=None, max_length=MAX_CONTRACT_IDS)
    statuses: list[ContractStatus] | None = Field(default=None, max_length=20)
    include_stale: bool = True
    include_heartbeats: bool = False
    # Resume: the last event id this monitor saw; what it missed is replayed first, in order.
    last_event_id: str | None = Field(default=None, max_length=40)
    action: Literal["subscribe"] | None = None

    @field_validator("last_event_id")
    @classmethod
    def _numeric(cls, value: str | None) -> str | None:
        if value is not None and not value.isdigit():
            # Heartbeat ids are not positions in the log: resuming from one resumes from nothing.
            raise ValueError("last_event_id must be the id of a logged event (digits), not a heartbeat id")
        return value

    def applied(self) -> dict[str, Any]:
        """The filter as it is stored and echoed back: what the server will actually apply."""
        return {
            "contract_ids": [str(c) for c in self.contract_ids] if self.contract_ids is not None else None,
            "statuses": [s.value for s in self.statuses] if self.statuses is not None else None,
            "include_stale": self.include_stale,
            "include_heartbeats": self.include_heartbeats,
        }


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A connection as the broadcaster sees it: whose it is, and its filter."""

    connection_id: str
    owner_id: UUID
    is_admin: bool
    contract_ids: frozenset[str] | None
    statuses: frozenset[str] | None
    include_stale: bool
    include_heartbeats: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Subscriber:
        ids = row["contract_ids"]
        statuses = row["statuses"]
        return cls(
            connection_id=row["connection_id"],
            owner_id=row["owner_id"],
            is_admin=row["is_admin"],
            contract_ids=frozenset(str(i) for i in ids) if ids is not None else None,
            statuses=frozenset(statuses) if statuses is not None else None,
            include_stale=row["include_stale"],
            include_heartbeats=row["include_heartbeats"],
        )

    def wants(self, event: Mapping[str, Any], owner_id: str | None, status: str | None) -> bool:
        """Whether this monitor gets ``event`` of a contract owned by ``owner_id``, now in ``status``.

        A status filter matches on the contract's status now, and for a status change on either
        side of it: a monitor watching active contracts sees a contract leave ``active``.

        A replay applies the same rule in SQL (``db/monitor.py: events_after``, held to it by
        tests/integration/test_monitor_limits.py): a change here is a change there.
        """
        if not self.is_admin and owner_id != str(self.owner_id):
            return False
        kind = event["type"]
        if kind == HEARTBEAT and not self.include_heartbeats:
            return False
        if kind == STALE_DETECTED and not self.include_stale:
            return False
        if self.contract_ids is not None and event.get("contract_id") not in self.contract_ids:
            return False
        if self.statuses is not None:
            seen = {status}
            if kind == "status_changed":
                data = event.get("data") or {}
                seen |= {data.get("old_status"), data.get("new_status")}
            if not (seen & self.statuses):
                return False
        return True


def route(
    events: Iterable[Mapping[str, Any]],
    subscribers: Iterable[Subscriber],
    statuses: Mapping[str, str],
) -> dict[str, list[Mapping[str, Any]]]:
    """Which events each connection gets, in event order; connections that get none are left out.

    ``statuses`` maps contract ids to their current status (a contract deleted since has none: a
    status filter does not match it; owner and admins without one still see its last events).
    """
    ordered = list(events)
    out: dict[str, list[Mapping[str, Any]]] = {}
    for sub in subscribers:
        mine = [e for e in ordered if sub.wants(e, e.get("owner_id"), statuses.get(str(e.get("contract_id"))))]
        if mine:
            out[sub.connection_id] = mine
    return out


ENVELOPE_KEYS = frozenset({"id", "type", "contract_id", "timestamp", "actor", "data", "owner_id"})


def public(event: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope as sent to a client: the routing key ``owner_id`` dropped, and an oversized
    ``data`` cut down to the type's seed fields (flagged ``truncated``) so a frame always fits.

    The seed's event shape has its fields at the top level (``{"type": "status_changed",
    "contract_id", "old_status", "new_status", "reason"}``), and its compatibility rule is to send both
    shapes during a transition: so the type's seed fields are also copied from ``data`` to the top
    level, never replacing an envelope key."""
    out = {k: v for k, v in event.items() if k != "owner_id"}
    keep = SEED_FIELDS.get(out["type"], ())
    if len(json.dumps(out, default=str)) > MAX_EVENT_BYTES:
        data = out.get("data") or {}
        out["data"] = {k: _clip(data[k]) for k in keep if k in data} | {"truncated": True}
    data = out.get("data") or {}
    out.update({k: data[k] for k in keep if k in data and k not in ENVELOPE_KEYS})
    return out


def _clip(value: Any) -> Any:
    return value[:1000] + "…" if isinstance(value, str) and len(value) > 1000 else value
