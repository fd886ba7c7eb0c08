"""What an ``Idempotency-Key`` costs a create: ``POST /contracts`` without a key, with a fresh key, and
replayed (the same key again), in-process (the app under TestClient, no network), on a fresh database.

Run it (a script, not a pytest test):

    .venv/bin/python -m tests.bench.bench_idempotency [--requests 300]

It creates a fresh database (``bench_contracts.bench_database``: on the DATABASE_URL server, else an
embedded PostgreSQL; dropped at the end), migrates it, and prints for each mode the median and 95th
percentile latency and the transactions committed per request (``pg_stat_database.xact_commit``; the
rate limiter's leases included, as in every mode).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db.connection import PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.services import auth
from tests.bench.bench_contracts import bench_database


def _commits(db: PooledDatabase, name: str) -> int:
    with db.connection() as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    assert row is not None
    return int(row["xact_commit"])


def _run(label: str, n: int, send: Callable[[int], int], db: PooledDatabase, name: str) -> None:
    times: list[float] = []
    before = _commits(db, name)
    for i in range(n):
        start = time.perf_counter()
        status = send(i)
        times.append(time.perf_counter() - start)
        assert status == 201, status
    time.sleep(0.6)  # pg_stat_database is updated by the backends at most every 500 ms
    per = (_commits(db, name) - before - 1) / n  # minus the reading query itself
    p95 = statistics.quantiles(times, n=20)[18]
    print(
        f"{label:<22} median {statistics.median(times) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"
        f"  {per:.2f} commits/request"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    # A fresh database (DATABASE_URL server, or an embedded PostgreSQL without it), dropped at the end.
    with bench_database() as (url, _):
        name = urlsplit(url).path.lstrip("/")
        migrate(url)
        db = PooledDatabase(url)
        with transaction(db) as conn:
            secret = auth.ensure_admin(conn, name="bench", token=f"mkm_bench_{uuid.uuid4().hex}")
        assert secret is not None
        headers = {"Authorization": f"Bearer {secret}"}
        body = {"name": "bench", "contract_type": "simple"}
        with TestClient(create_app(db)) as client:

            def post(h: dict[str, str]) -> int:
                return int(client.post("/api/v1/contracts", json=body, headers=h).status_code)

            for _ in range(20):  # warm up: imports (Powertools on the first keyed request), pool, plans
                post(headers)
                post({**headers, "Idempotency-Key": str(uuid.uuid4())})
            _run("no key", args.requests, lambda i: post(headers), db, name)
            _run("fresh key", args.requests, lambda i: post({**headers, "Idempotency-Key": f"k{i}"}), db, name)
            _run("replay (same key)", args.requests, lambda i: post({**headers, "Idempotency-Key": f"k{i}"}), db, name)
        db.close()


if __name__ == "__main__":
    main()
