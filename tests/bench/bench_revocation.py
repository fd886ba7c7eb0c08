"""The cost of checking tokens on the broadcast path (issue 12): the subscriber statement with and
without the per-connection token check, and ``broadcast`` end to end with a sender that drops.

Run it (a script, not a pytest test):

    .venv/bin/python -m tests.bench.bench_revocation [--connections 1000] [--rounds 200]

On a fresh database (DATABASE_URL server or embedded PostgreSQL): ``--connections`` monitor rows of one
endpoint, spread over 100 users with a token each (a tenth of the tokens revoked), then ``--rounds``
alternating runs of the statement before issue 12 and the current one, each in its own transaction, as
``broadcast`` runs it. Prints the median and p95 of each, and of ``broadcast`` for one event.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.principals import Role
from makima.services import auth
from makima.services import contracts as contracts_svc
from makima.services import monitor as svc
from tests.bench.bench_contracts import bench_database

ENDPOINT = "bench:revocation"
# live_subscribers as it was before issue 12 (no token check).
BEFORE = f"""
SELECT {monitor_sql._CONNECTION_COLUMNS} FROM monitor_connections
 WHERE endpoint = %s AND NOT resuming
 ORDER BY connection_id
"""


class Drop:
    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]:
        return set()

    def close(self, connection_ids: Sequence[str], error: Any) -> set[str]:
        return set()  # kept, so every round meets the same rows


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"median {statistics.median(ordered) * 1000:.3f} ms, p95 {p95 * 1000:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with bench_database() as (url, where):
        migrate(url)
        db = PooledDatabase(url, min_size=1, max_size=4)
        with transaction(db) as conn:
            secret = auth.ensure_admin(conn, name="bench-admin", token=f"mkm_bench_{uuid.uuid4().hex}")
            assert secret is not None
        admin = auth.resolve(db, secret)
        principals = []
        for i in range(100):
            user = auth.create_user(db, admin, name=f"bench-{i}", role=Role.USER)
            issued = auth.issue_token(db, admin, user.id, name="t", kind="user")
            principals.append(auth.resolve(db, issued.secret))
        for n in range(args.connections):
            cid = f"bench-{n:05d}"
            svc.connect(db, cid, principals[n % len(principals)], ENDPOINT)
            svc.answer_message(db, cid, "{}")
        for p in principals[:10]:
            auth.revoke_token(db, admin, p.token_id)  # type: ignore[arg-type]
        contract = contracts_svc.create_contract(
            db, principals[-1], name="bench", description="", contract_type="simple", phase_guard=False
        )
        with transaction(db) as conn:
            (row,) = monitor_sql.events_after(conn, None, 0, 10, [contract.id])
        from makima.domain.monitor import from_log

        event = from_log(row)
        before: list[float] = []
        after: list[float] = []
        whole: list[float] = []
        for _ in range(args.rounds):
            for statement, samples in ((BEFORE, before), (None, after)):
                started = time.perf_counter()
                with transaction(db) as conn:
                    if statement is None:
                        rows = monitor_sql.live_subscribers(conn, ENDPOINT)
                    else:
                        rows = conn.execute(statement, (ENDPOINT,)).fetchall()
                samples.append(time.perf_counter() - started)
                assert len(rows) == args.connections
            started = time.perf_counter()
            svc.broadcast(db, [event], Drop(), ENDPOINT, Drop())
            whole.append(time.perf_counter() - started)
        db.close()
    print(f"{where}; {args.connections} connections of one endpoint, {args.rounds} alternating rounds")
    print(f"  subscribers, before issue 12 (no token check): {_ms(before)}")
    print(f"  subscribers, with the token check:            {_ms(after)}")
    print(f"  broadcast of one event (route, no transport):  {_ms(whole)}")


if __name__ == "__main__":
    main()
