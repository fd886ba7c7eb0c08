"""Issue 13, defect 3: what one monitor may cost the server. In-process, on a real PostgreSQL, with a
recording ``Sender`` standing for the transport (the local stack and AWS have their own tests:
tests/e2e/test_monitor.py, tests/integration/test_monitor_aws.py).

- a replay's filter runs in SQL: a resume whose filter matches nothing reads no event into Python, and
  what the SQL takes is exactly what the broadcaster's rule (``Subscriber.wants``) takes;
- a replay is bounded by log rows scanned, events sent and a deadline; past any of them the monitor is
  told to ``reload`` and goes live;
- a replay that fails or dies never leaves the connection ``resuming`` for good;
- per-token limits on open monitors and on messages; a message over the size limit is refused unread.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from makima.config import MonitorConfig
from makima.db import monitor as monitor_sql
from makima.db.connection import Conn, PooledDatabase, transaction
from makima.domain.monitor import Subscriber, from_log, route
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus
from makima.errors import TooManyConnections
from makima.services import auth
from makima.services import contracts as contracts_svc
from makima.services import monitor as svc
from tests.conftest import Caller

pytestmark = pytest.mark.integration

ENDPOINT = "test:limits"


@pytest.fixture(autouse=True)
def _forget_connections(db: PooledDatabase) -> Iterator[None]:
    yield
    with transaction(db) as conn:
        conn.execute("DELETE FROM monitor_connections WHERE connection_id LIKE 'lim-%'")


class Transport:
    """Records what is sent (and answers every connection as open)."""

    def __init__(self) -> None:
        self.sent: dict[str, list[Mapping[str, Any]]] = {}

    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]:
        for cid, messages in deliveries.items():
            self.sent.setdefault(cid, []).extend(messages)
        return set()

    def close(self, connection_ids: Sequence[str], error: Exception) -> set[str]:
        return set(connection_ids)

    def events(self, cid: str) -> list[Mapping[str, Any]]:
        return [m for m in self.sent.get(cid, []) if "id" in m and m.get("type") not in ("reload", "replayed")]

    def last(self, cid: str) -> Mapping[str, Any]:
        return self.sent[cid][-1]


def _open(
    db: PooledDatabase, caller: Caller | Principal, tag: str, limits: MonitorConfig | None = None, **f: Any
) -> str:
    principal = caller.principal if isinstance(caller, Caller) else caller
    cid = f"lim-{tag}-{uuid.uuid4().hex[:8]}"
    svc.connect(db, cid, principal, ENDPOINT, limits or MonitorConfig())
    answer = svc.answer_message(db, cid, json.dumps(f), limits or MonitorConfig())
    assert answer.reply["type"] == "subscribed", answer.reply
    return cid


def _contract(db: PooledDatabase, caller: Caller, name: str, *statuses: ContractStatus) -> str:
    c = contracts_svc.create_contract(
        db, caller.principal, name=name, description="", contract_type="simple", phase_guard=False
    )
    for s in statuses:
        contracts_svc.change_status(db, caller.principal, c.id, status=s, reason=name)
    return str(c.id)


def _head(db: PooledDatabase) -> int:
    with transaction(db) as conn:
        return monitor_sql.log_head(conn)


class RowsRead:
    """Counts the event rows the replay's statements hand to Python."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        self.calls = 0
        real = monitor_sql.events_after

        def counting(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            out = real(*args, **kwargs)
            self.calls += 1
            self.rows += len(out)
            return out

        monkeypatch.setattr(monitor_sql, "events_after", counting)


# --- the filter in SQL -------------------------------------------------------------------------------


def test_a_resume_whose_filter_matches_nothing_reads_no_event_into_python(
    db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log with events of many contracts, none of them archived nor ever archived
    owner = make_caller()
    start = _head(db)
    for i in range(30):
        _contract(db, owner, f"busy {i}", ContractStatus.ACTIVE, ContractStatus.PAUSED)
    # And an admin's monitor (it sees every tenant) that watches archived contracts, resuming from before
    cid = _open(db, admin, "nothing", statuses=["archived"])
    rows = RowsRead(monkeypatch)
    transport = Transport()

    # When it replays
    assert svc.replay(db, cid, start, transport, transport) == 0

    # Then no event row left the database, and the marker says it is complete
    assert rows.rows == 0
    assert transport.last(cid)["type"] == "replayed"
    assert transport.last(cid)["complete"] is True


FILTERS: tuple[dict[str, Any], ...] = (
    {},
    {"statuses": ["active"]},
    {"statuses": ["paused", "failed"]},
    {"statuses": ["created"], "include_stale": False},
    {"include_stale": False},
    {"contract_ids": "@FIRST@"},
    {"contract_ids": "@FIRST@", "statuses": ["paused"]},
    {"contract_ids": "@FIRST@", "statuses": ["active"]},
)


@pytest.mark.parametrize("many", [False, True], ids=["ids-listed", "ids-selected"])
@pytest.mark.parametrize("admin_view", [False, True])
@pytest.mark.parametrize("fltr", FILTERS)
def test_the_sql_filter_takes_exactly_what_the_broadcasters_rule_takes(
    db: PooledDatabase,
    admin: Principal,
    make_caller: Callable[..., Caller],
    fltr: dict[str, Any],
    admin_view: bool,
    many: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if many:  # the statement for statuses that many contracts are in (selected in SQL, not listed)
        monkeypatch.setattr(monitor_sql, "_MANY_CONTRACTS", 1)
    # Given contracts of two owners that moved through statuses (some left the ones watched), and a
    # stale event
    owner, other = make_caller(), make_caller()
    start = _head(db)
    first = _contract(db, owner, "first", ContractStatus.ACTIVE, ContractStatus.PAUSED)
    _contract(db, owner, "second", ContractStatus.ACTIVE)
    _contract(db, owner, "third", ContractStatus.ACTIVE, ContractStatus.PAUSED, ContractStatus.ACTIVE)
    _contract(db, other, "theirs", ContractStatus.ACTIVE, ContractStatus.PAUSED)
    _contract(db, owner, "idle")
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO contract_events (contract_id, owner_id, type, payload, actor) "
            "VALUES (%s, %s, 'stale_detected', '{}', 'test')",
            (first, owner.principal.user_id),
        )
    if fltr.get("contract_ids") == "@FIRST@":
        fltr = fltr | {"contract_ids": [first]}
    cid = _open(db, admin if admin_view else owner, "same", **fltr)

    # When it replays from before them
    transport = Transport()
    svc.replay(db, cid, start, transport, transport)

    # Then it gets what the broadcaster's rule would route to it, in order
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, cid)
        assert row is not None
        rows = monitor_sql.events_after(conn, None, start, 10_000, None)
        events = [from_log(r) for r in rows]
        statuses = monitor_sql.contract_statuses(conn, sorted({e["contract_id"] for e in events if e["contract_id"]}))
    expected = route(events, [Subscriber.from_row(row)], statuses).get(cid, [])
    assert [e["id"] for e in transport.events(cid)] == [e["id"] for e in expected]
    assert transport.last(cid)["type"] == "replayed"


# --- the bounds, and reload ----------------------------------------------------------------------------


def test_a_resume_further_behind_than_the_scan_bound_is_told_to_reload_without_reading_the_log(
    db: PooledDatabase, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given more events since the resume point than a replay may scan
    owner = make_caller()
    start = _head(db)
    for i in range(4):
        _contract(db, owner, f"many {i}", ContractStatus.ACTIVE)
    limits = MonitorConfig(replay_max_scanned=5)
    cid = _open(db, owner, "far", limits)
    rows = RowsRead(monkeypatch)
    transport = Transport()

    # When it resumes
    assert svc.replay(db, cid, start, transport, transport, limits=limits) == 0

    # Then nothing is read or sent but a reload answer naming the head, and the connection is live
    assert rows.calls == 0
    assert transport.sent[cid] == [
        {"type": "reload", "reason": "too_far_behind", "count": 0, "last_event_id": str(_head(db))}
    ]
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, cid)
        assert row is not None
        assert row["resuming"] is False


def test_more_matching_events_than_the_budget_sends_the_budget_then_reload(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    start = _head(db)
    first = _contract(db, owner, "budget", ContractStatus.ACTIVE, ContractStatus.PAUSED, ContractStatus.ACTIVE)
    # 4 events (created, 3 status changes)
    over = MonitorConfig(replay_max_events=3)
    cid = _open(db, owner, "over", over, contract_ids=[first])
    transport = Transport()
    assert svc.replay(db, cid, start, transport, transport, limits=over) == 3
    assert len(transport.events(cid)) == 3
    assert transport.last(cid)["type"] == "reload"
    assert transport.last(cid)["reason"] == "too_many_events"
    assert transport.last(cid)["count"] == 3

    # Exactly the budget is a complete replay
    exact = MonitorConfig(replay_max_events=4)
    cid = _open(db, owner, "exact", exact, contract_ids=[first])
    transport = Transport()
    assert svc.replay(db, cid, start, transport, transport, limits=exact) == 4
    assert transport.last(cid)["type"] == "replayed"


def test_a_replay_past_its_deadline_stops_and_is_told_to_reload(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    start = _head(db)
    for i in range(3):
        _contract(db, owner, f"slow {i}", ContractStatus.ACTIVE)
    limits = MonitorConfig(replay_deadline_seconds=2.5)
    cid = _open(db, owner, "deadline", limits)
    ticks = itertools.count()  # each look at the clock is one second later: the deadline comes mid-replay

    transport = Transport()
    svc.replay(db, cid, start, transport, transport, limits=limits, clock=lambda: float(next(ticks)))

    assert transport.last(cid)["type"] == "reload"
    assert transport.last(cid)["reason"] == "deadline"
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, cid)
        assert row is not None
        assert row["resuming"] is False


def test_a_page_read_past_the_deadline_is_not_sent_and_the_replay_told_to_reload(
    db: PooledDatabase, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a replay whose page takes longer than its deadline to read (a slow database). The page's
    # statement is not cancelled at the deadline: a per-transaction statement_timeout would pin the
    # broadcaster's RDS Proxy session (tests/integration/test_proxy_pinning.py); the role's
    # statement_timeout bounds it, and the deadline is checked again once it is read.
    owner = make_caller()
    start = _head(db)
    _contract(db, owner, "slow statement", ContractStatus.ACTIVE)
    limits = MonitorConfig(replay_deadline_seconds=0.3)
    cid = _open(db, owner, "slowsql", limits)
    real = monitor_sql.events_after

    def slow(conn: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        conn.execute("SELECT pg_sleep(0.6)")
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(monitor_sql, "events_after", slow)
    transport = Transport()
    began = time.monotonic()

    # When it runs
    svc.replay(db, cid, start, transport, transport, limits=limits)

    # Then the page read after the deadline is not sent: the replay stops there and is told to reload
    assert time.monotonic() - began < 2
    assert [m["type"] for m in transport.sent.get(cid, [])] == ["reload"]
    assert transport.last(cid)["reason"] == "deadline"


def test_a_replay_that_fails_clears_the_mark_and_is_told_to_reload(
    db: PooledDatabase, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = make_caller()
    start = _head(db)
    _contract(db, owner, "fails", ContractStatus.ACTIVE)
    cid = _open(db, owner, "fails", last_event_id=str(start))

    def broken(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("boom")

    monkeypatch.setattr(monitor_sql, "events_after", broken)
    transport = Transport()
    assert svc.replay(db, cid, start, transport, transport) == 0
    assert transport.last(cid)["type"] == "reload"
    assert transport.last(cid)["reason"] == "failed"
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, cid)
        assert row is not None
        assert row["resuming"] is False


def test_a_replay_that_dies_unseen_leaves_a_mark_that_expires(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    # Given a connection that asked to resume, whose replay never ran to its end (a Lambda killed)
    owner = make_caller()
    contract = _contract(db, owner, "stuck", ContractStatus.ACTIVE)
    cid = _open(db, owner, "stuck", last_event_id=str(_head(db)))
    contracts_svc.change_status(
        db, owner.principal, uuid.UUID(contract), status=ContractStatus.PAUSED, reason="while resuming"
    )
    with transaction(db) as conn:
        (row,) = monitor_sql.events_after(conn, None, _head(db) - 1, 1, None)
    event = from_log(row)

    # Then while its mark is fresh the broadcaster skips it
    transport = Transport()
    svc.broadcast(db, [event], transport, ENDPOINT)
    assert cid not in transport.sent

    # And once the mark's deadline has passed, it is live again
    with transaction(db) as conn:
        conn.execute(
            "UPDATE monitor_connections SET resuming_until = now() - interval '1 second' WHERE connection_id = %s",
            (cid,),
        )
    svc.broadcast(db, [event], transport, ENDPOINT)
    assert [e["id"] for e in transport.sent[cid]] == [event["id"]]


def test_a_new_connection_without_a_filter_stays_out_of_the_broadcast(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    # The deadline is the replay's: a connection that has not subscribed yet is not made live by it
    owner = make_caller()
    contract = _contract(db, owner, "unsubscribed", ContractStatus.ACTIVE)
    cid = f"lim-new-{uuid.uuid4().hex[:8]}"
    svc.connect(db, cid, owner.principal, ENDPOINT)
    with transaction(db) as conn:
        (row,) = monitor_sql.events_after(conn, None, 0, 1, [uuid.UUID(contract)])
    transport = Transport()
    svc.broadcast(db, [from_log(row)], transport, ENDPOINT)
    assert cid not in transport.sent


# --- per-token limits, message size ------------------------------------------------------------------


def test_a_token_may_hold_only_so_many_open_monitors(
    db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    limits = MonitorConfig(max_connections_per_token=2)
    first = _open(db, owner, "a", limits)
    _open(db, owner, "b", limits)

    # A third on the same token is refused, and nothing is recorded
    third = f"lim-c-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TooManyConnections) as refused:
        svc.connect(db, third, owner.principal, ENDPOINT, limits)
    assert refused.value.status == 429
    assert refused.value.details == {"max_connections_per_token": 2}
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, third) is None

    # Another token of the same user has its own places; a closed connection frees one
    issued = auth.issue_token(db, admin, owner.principal.user_id, name="second", kind="user")
    _open(db, auth.resolve(db, issued.secret), "d", limits)
    svc.disconnect(db, first)
    svc.connect(db, third, owner.principal, ENDPOINT, limits)


def test_two_connects_of_one_token_for_its_last_place_take_turns(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    # Given a token with one place left, taken by a connect whose transaction has not committed yet
    owner = make_caller()
    p = owner.principal
    outcomes: list[bool] = []

    def connect(conn: Conn, name: str) -> bool:
        return monitor_sql.add_connection(
            conn, name, p.user_id, is_admin=False, endpoint=ENDPOINT, token_id=p.token_id, max_per_token=1
        )

    with transaction(db) as first:
        assert connect(first, f"lim-x-{uuid.uuid4().hex[:8]}")

        # When a second connect of the same token comes meanwhile
        def second() -> None:
            with transaction(db) as conn:
                outcomes.append(connect(conn, f"lim-y-{uuid.uuid4().hex[:8]}"))

        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(timeout=0.5)

        # Then it waits for the first (the token's row lock), not counting past it
        assert waiting.is_alive()
        assert outcomes == []
    waiting.join(timeout=10)

    # And once the first committed, it finds the place taken
    assert outcomes == [False]


def test_messages_past_the_tokens_budget_are_refused_until_it_refills(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    limits = MonitorConfig(messages_per_second=1, message_burst=3)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    one = f"lim-r1-{uuid.uuid4().hex[:8]}"
    two = f"lim-r2-{uuid.uuid4().hex[:8]}"
    svc.connect(db, one, owner.principal, ENDPOINT, limits)
    svc.connect(db, two, owner.principal, ENDPOINT, limits)
    ping = json.dumps({"action": "ping"})

    # The budget is the token's: its connections share it
    answers = [svc.answer_message(db, cid, ping, limits, now=at).reply for cid in (one, two, one, two)]
    assert [a["type"] for a in answers] == ["pong", "pong", "pong", "error"]
    refused = answers[-1]
    assert refused["code"] == "RATE_LIMITED"
    assert refused["details"]["retry_after"] == 1
    # A refused filter changes nothing
    stored = svc.answer_message(db, two, json.dumps({"statuses": ["paused"]}), limits, now=at).reply
    assert stored["code"] == "RATE_LIMITED"
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, two)
        assert row is not None
        assert row["statuses"] is None

    # And it refills with time
    later = at + timedelta(seconds=2)
    assert svc.answer_message(db, two, ping, limits, now=later).reply == {"type": "pong"}


def test_an_oversized_message_is_refused_unread_and_the_filter_stays(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    limits = MonitorConfig(max_message_bytes=16 * 1024)
    cid = _open(db, owner, "big", limits, statuses=["active"])
    big = json.dumps({"statuses": ["paused"], "pad": "x" * (64 * 1024)})

    answer = svc.answer_message(db, cid, big, limits).reply

    assert answer["type"] == "error"
    assert answer["code"] == "PAYLOAD_TOO_LARGE"
    assert answer["details"] == {"max_bytes": 16 * 1024}
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, cid)
        assert row is not None
        assert row["statuses"] == ["active"]


def test_the_default_message_limit_admits_a_filter_of_the_most_contract_ids(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    cid = _open(db, owner, "ids")
    message = json.dumps({"contract_ids": [str(uuid.uuid4()) for _ in range(1000)]})
    assert svc.answer_message(db, cid, message).reply["type"] == "subscribed"
