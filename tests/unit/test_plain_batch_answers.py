"""A batch the plain statement applied is answered as its rows would answer it (issue 15, "Change 36").

``_PLAIN_MANY`` answers in one row, which ``db/heartbeats.py`` hands on as a ``PlainBatch``; the service
answers it without building its rows (``_Ingest._finish_plain``). Here the same batch, with invalid
items, bad timestamps and items without a contract among its heartbeats, and an owner's or an admin's
(each heartbeat with its own contract owner), must get the same answers, the same monitor envelopes and
the same "logged" from the ``PlainBatch`` as from the list of its rows (``finish``'s general path).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from makima.db.heartbeats import PlainBatch
from makima.domain.principals import Principal, Role
from makima.domain.supervisors import Heartbeat, InvalidHeartbeat, SupervisorState
from makima.services.supervisors import _Ingest

NOW = datetime.now(UTC)

item = st.sampled_from(["plain", "invalid", "old", "no contract"])


def _item(kind: str, k: int) -> Heartbeat | InvalidHeartbeat:
    if kind == "invalid":
        return InvalidHeartbeat(uuid.uuid4(), "progress: too big", [{"loc": ["progress"], "msg": "x", "type": "y"}])
    return Heartbeat(
        task_id=uuid.uuid4(),
        contract_id=None if kind == "no contract" else uuid.uuid4(),
        state=SupervisorState.WORKING,
        phase="build",
        current_activity=f"step {k}",
        progress=k % 100,
        pending_task_ids=[],
        timestamp=NOW - timedelta(days=2) if kind == "old" else NOW,
        generation=1,
    )


class Told:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Mapping[str, Any]], bool]] = []

    def __call__(self, envelopes: Sequence[Mapping[str, Any]], logged: bool) -> None:
        self.calls.append((list(envelopes), logged))


@given(kinds=st.lists(item, min_size=1, max_size=12), admin=st.booleans())
def test_a_plain_batch_is_answered_as_its_rows(kinds: list[str], admin: bool) -> None:
    principal = Principal(uuid.uuid4(), Role.ADMIN if admin else Role.USER)
    heartbeats = [_item(kind, k) for k, kind in enumerate(kinds)]
    ingest = _Ingest(principal, heartbeats)
    n = len(ingest.rows)
    owners = [uuid.uuid4() for _ in range(n)] if admin else [principal.user_id] * n
    batch = PlainBatch([str(r["state"]) for r in ingest.rows], [1 + k % 3 for k in range(n)], owners)

    told_plain, told_rows = Told(), Told()
    plain = ingest.finish(batch, told_plain)
    rows = _Ingest(principal, heartbeats).finish(list(batch), told_rows)

    assert plain == rows
    assert len(plain) == len(kinds)
    assert [a.accepted for a in plain] == [kind == "plain" for kind in kinds]
    assert told_plain.calls == told_rows.calls
    if n:  # every accepted heartbeat told, with its own contract's owner, nothing logged
        ((envelopes, logged),) = told_plain.calls
        assert [e["owner_id"] for e in envelopes] == [str(o) for o in owners]
        assert len(envelopes) == sum(kind == "plain" for kind in kinds)
        assert not logged
