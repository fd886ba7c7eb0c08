"""How big a long-running supervisor's persisted state gets, and what answering it costs (issue 13).

A supervisor saves ``--saves`` times, each appending ``--messages`` messages of about ``--message-bytes``
bytes (through the SDK's ``SupervisorSession``, over HTTP to the app under uvicorn, on a fresh database as
``bench_contracts.bench_database`` makes one). Then it prints: what is stored (rows and PostgreSQL's
text size of the messages), the size of ``GET …/supervisor/state`` and of the restore answer, the time
of each save (the ones that compacted included) and of the SDK reading the whole kept conversation.

    .venv/bin/python -m tests.bench.bench_supervisor_state                # 28 saves x 500 messages
    .venv/bin/python -m tests.bench.bench_supervisor_state --saves 56

Runs on code from before the cap too (the fields it lacks read as 0), for before/after figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence

import httpx
import psycopg

from makima.api.app import create_app
from makima.client import MakimaApi
from makima.client.session import SupervisorSession
from makima.db.connection import PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.domain.principals import Role
from makima.domain.supervisors import SavePoint
from makima.services import auth
from tests.bench.bench_contracts import bench_database
from tests.integration.live import LiveServer

MB = 1_000_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_supervisor_state", description=__doc__)
    parser.add_argument("--saves", type=int, default=28)
    parser.add_argument("--messages", type=int, default=500, help="messages appended by each save")
    parser.add_argument("--message-bytes", type=int, default=440, help="characters of each message's content")
    args = parser.parse_args(argv)

    with bench_database() as (url, where):
        migrate(url)
        db = PooledDatabase(url, min_size=1, max_size=4)
        with transaction(db) as conn:
            admin_secret = auth.ensure_admin(conn, name="bench-admin", token=f"mkm_admin_{uuid.uuid4().hex}")
            assert admin_secret is not None
            admin = auth.resolve_with(conn, admin_secret)
        user = auth.create_user(db, admin, name="bench", role=Role.USER)
        token = auth.issue_token(db, admin, user.id, name="bench", kind="user").secret
        server = LiveServer(create_app(db)).start()
        try:
            with MakimaApi(server.url, token) as api:
                contract = api.create_contract("bench state", auto_complete_enabled=False)
                session = SupervisorSession.start(api, contract["id"])
                session.update(state="working")
                save_times = []
                for save in range(args.saves):
                    for i in range(args.messages):
                        session.say("y" * args.message_bytes, key=f"m{save * args.messages + i}")
                    began = time.perf_counter()
                    session.save(SavePoint.LLM_RESPONSE)
                    save_times.append(time.perf_counter() - began)

                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "SELECT count(*), COALESCE(sum(octet_length(message::text)), 0), min(seq) "
                        "FROM supervisor_conversation WHERE task_id = %s",
                        (session.task_id,),
                    ).fetchone()
                assert row is not None
                path = f"{server.url}/api/v1/contracts/{contract['id']}/supervisor"
                headers = {"Authorization": f"Bearer {token}"}
                state = httpx.get(f"{path}/state", headers=headers, timeout=60)
                began = time.perf_counter()
                whole = api.get_state(contract["id"])
                read_time = time.perf_counter() - began
                restore = httpx.post(f"{path}/restore", json={}, headers=headers, timeout=60)
        finally:
            server.stop()
            db.close()

    total = args.saves * args.messages
    print(f"database: {where}")
    print(f"saved: {args.saves} saves x {args.messages} messages = {total} messages")
    print(f"stored: {row[0]} messages kept (from seq {row[2]}), {row[1] / MB:.2f} MB (PostgreSQL's text)")
    body = state.json()
    print(
        f"GET …/state: {len(state.content) / MB:.2f} MB, {len(body['conversation_history'])} messages, "
        f"next_after_seq={body.get('next_after_seq')}"
    )
    print(f"restore: {restore.status_code}, {len(restore.content) / MB:.2f} MB")
    print(f"SDK get_state: {len(whole['conversation_history'])} messages in {read_time * 1000:.0f} ms")
    print(
        f"save: median {statistics.median(save_times) * 1000:.0f} ms, max {max(save_times) * 1000:.0f} ms, "
        f"last {save_times[-1] * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
