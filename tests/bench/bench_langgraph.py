"""A LangGraph checkpoint write through makima (``MakimaCheckpointSaver.put`` over HTTP to the local stack)
next to LangGraph's own ``PostgresSaver`` writing to the same PostgreSQL, in the same run (issue 18).

Run it (a script, not a pytest test):

    .venv/bin/python -m tests.bench.bench_langgraph [--quick] [--rounds 3] [--puts 100] [--sizes 10,200] [--json FILE]

It makes a fresh database (``bench_contracts.bench_database``: a new database on the DATABASE_URL server,
dropped at the end; without DATABASE_URL an embedded PostgreSQL), migrates it, makes an owner with a
daemon token (``bench_heartbeats.build_world``, what a supervisor host holds) and starts ``makima dev`` on
it (``bench_heartbeats.start_stack``, with ``bench_api.ENV``'s rate-limit budgets that no client of a
bench exhausts). ``PostgresSaver`` gets its tables (``setup()``) in that same database, in a schema of
their own (``langgraph``: its table ``checkpoints`` would be makima's), over one psycopg connection set
up as its ``from_conn_string`` sets one up.

What is written is what a graph writes: a real ``StateGraph`` over ``MessagesState`` whose one node
appends one chat message of about 200 bytes per step runs on an in-memory recorder, and the
``put(config, checkpoint, metadata, new_versions)`` calls LangGraph made are kept, by the number of
messages in the checkpoint (the whole channel is in each checkpoint: that is how LangGraph stores a
list channel; ``new_versions`` names the one channel that changed). Every saver gets the same calls:

- per round and size N, ``--puts`` timed puts over ``ceil(puts / --steps)`` fresh threads; each thread
  is first given (untimed) the recorded checkpoint of N - 1 messages, then the next ``--steps`` steps
  are timed (N, N + 1, … messages), each put's parent the config the previous put returned;
- makima, bound: each thread bound to a contract of its own (``configurable.contract_id``, as an agent
  binds its thread). The saver's first put on a contract binds it (``POST /checkpoints/bind`` starts the
  contract's supervisor), in the untimed first put; every timed put is also the supervisor's heartbeat;
- makima, unbound: the same puts with no ``contract_id`` (a plain checkpoint store): the difference is
  what the binding costs.

Each round runs every saver in turn (interleaved, so a noisy neighbour on the 2 shared cores hits all),
after an untimed warm-up round; rates are medians over rounds, a ratio to PostgresSaver the median of
the rounds' ratios, latencies (p50/p95 per put) pooled over the rounds. ``--json FILE`` writes the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from psycopg.rows import DictRow, dict_row

from makima.db.connection import PooledDatabase
from makima.db.migrate import migrate
from makima.domain.principals import Principal, Role
from makima.integrations.langgraph import MakimaCheckpointSaver
from makima.services import contracts as contracts_svc
from tests.bench.bench_api import ENV
from tests.bench.bench_contracts import bench_database, percentile
from tests.bench.bench_heartbeats import build_world, start_stack

SIZES = (10, 200)
MESSAGE_BYTES = 200
SAVERS = ("makima", "makima-unbound", "postgres")
SAVER_NAMES = {
    "makima": "MakimaCheckpointSaver, bound to a contract",
    "makima-unbound": "MakimaCheckpointSaver, no contract",
    "postgres": "PostgresSaver (psycopg)",
}


# --------------------------------------------------------------------------------------------------
# What a graph writes


@dataclass(frozen=True)
class Put:
    """One recorded ``put``: its checkpoint, metadata and new versions (the config is rebuilt per thread)."""

    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    new_versions: ChannelVersions

    @property
    def messages(self) -> int:
        return len(self.checkpoint["channel_values"].get("messages", []))


class _Recorder(InMemorySaver):
    def __init__(self) -> None:
        super().__init__()
        self.puts: list[Put] = []

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self.puts.append(Put(checkpoint, metadata, new_versions))
        return super().put(config, checkpoint, metadata, new_versions)


def _message(i: int) -> AIMessage | HumanMessage:
    """About ``MESSAGE_BYTES`` of content; people and the model take turns."""
    text = f"message {i}: " + "lorem ipsum dolor sit amet " * 8
    cls = HumanMessage if i % 2 == 0 else AIMessage
    return cls(content=text[:MESSAGE_BYTES], id=f"msg-{i}")


def record_steps(last: int) -> dict[int, Put]:
    """Run a one-node graph that appends one message per step until the channel holds ``last`` messages;
    the recorded put of each step, by the number of messages in its checkpoint."""

    def chat(state: MessagesState) -> dict[str, list[AIMessage | HumanMessage]]:
        return {"messages": [_message(len(state["messages"]))]}

    def more(state: MessagesState) -> str:
        return "chat" if len(state["messages"]) < last else END

    graph = StateGraph(MessagesState)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    graph.add_conditional_edges("chat", more, ["chat", END])
    recorder = _Recorder()
    config: RunnableConfig = {"configurable": {"thread_id": "record"}, "recursion_limit": last + 10}
    graph.compile(checkpointer=recorder).invoke({"messages": []}, config)
    by_size = {p.messages: p for p in recorder.puts if p.metadata.get("source") == "loop"}
    assert set(range(1, last + 1)) <= set(by_size), "the recording missed a step"
    return by_size


# --------------------------------------------------------------------------------------------------
# Timing


@dataclass
class Round:
    rate: float  # puts/s, sequential puts of one client
    latencies_ms: list[float]


@dataclass
class Outcome:
    size: int
    rounds: dict[str, list[Round]] = field(default_factory=lambda: {s: [] for s in SAVERS})

    def rate(self, saver: str) -> float:
        return statistics.median(r.rate for r in self.rounds[saver])

    def latency(self, saver: str, q: float) -> float:
        return percentile([x for r in self.rounds[saver] for x in r.latencies_ms], q)

    def ratio(self, saver: str = "makima") -> float:
        """``saver`` / PostgresSaver: the median of the rounds' rate ratios."""
        pairs = zip(self.rounds[saver], self.rounds["postgres"], strict=True)
        return statistics.median(m.rate / p.rate for m, p in pairs)


def _config(thread_id: str, contract_id: str | None, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if contract_id is not None:
        configurable["contract_id"] = contract_id
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def run_round(
    saver: BaseCheckpointSaver[Any],
    recorded: dict[int, Put],
    size: int,
    puts: int,
    steps: int,
    contract: Callable[[], str | None],
) -> Round:
    """``puts`` timed puts at about ``size`` messages: threads of ``steps`` steps each (see the module's
    docstring). The first put of each thread (``size - 1`` messages) is untimed."""
    latencies: list[float] = []
    elapsed = 0.0
    for t in range(math.ceil(puts / steps)):
        thread_id, contract_id = f"bench-{size}-{uuid.uuid4().hex[:12]}", contract()
        first = recorded[size - 1]
        config = saver.put(_config(thread_id, contract_id), first.checkpoint, first.metadata, first.new_versions)
        for k in range(min(steps, puts - t * steps)):
            p = recorded[size + k]
            parent = _config(thread_id, contract_id, config["configurable"]["checkpoint_id"])
            t0 = time.perf_counter()
            config = saver.put(parent, p.checkpoint, p.metadata, p.new_versions)
            dt = time.perf_counter() - t0
            elapsed += dt
            latencies.append(dt * 1000)
    return Round(len(latencies) / elapsed, latencies)


def postgres_connection(url: str) -> psycopg.Connection[DictRow]:
    """What ``PostgresSaver.from_conn_string`` connects with, its search path the schema ``langgraph``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS langgraph")
    return psycopg.connect(
        url, autocommit=True, prepare_threshold=0, row_factory=dict_row, options="-c search_path=langgraph"
    )


# --------------------------------------------------------------------------------------------------
# Reporting


def print_table(outcomes: Sequence[Outcome]) -> None:
    head = f"{'state':<14} | {'saver':<42} | {'puts/s':>8} | {'p50 ms':>7} | {'p95 ms':>7} | {'makima/PG':>9}"
    print(head)
    print("-" * len(head))
    for o in outcomes:
        for s in SAVERS:
            ratio = f"{o.ratio(s):9.2f}" if s != "postgres" else ""
            print(
                f"{f'{o.size} messages':<14} | {SAVER_NAMES[s]:<42} | {o.rate(s):8,.0f} | "
                f"{o.latency(s, 0.5):7.2f} | {o.latency(s, 0.95):7.2f} | {ratio:>9}"
            )


def as_json(outcomes: Sequence[Outcome], facts: dict[str, Any]) -> dict[str, Any]:
    return {
        "facts": facts,
        "sizes": {
            str(o.size): {
                **{
                    s: {
                        "rate": o.rate(s),
                        "p50_ms": o.latency(s, 0.5),
                        "p95_ms": o.latency(s, 0.95),
                        "rounds": [r.rate for r in o.rounds[s]],
                        "ratio": o.ratio(s),
                    }
                    for s in SAVERS
                },
                "ratio": o.ratio(),
            }
            for o in outcomes
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_langgraph", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 10 puts per size")
    parser.add_argument("--rounds", type=int, help="rounds of makima then PostgresSaver per size (default 3)")
    parser.add_argument("--puts", type=int, help="timed puts per saver per round (default 100)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per thread (default 5)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="messages in the state (default 10,200)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    puts = args.puts or (10 if args.quick else 100)
    sizes = [int(s) for s in args.sizes.split(",")]
    if rounds < 1 or puts < 1 or args.steps < 1 or min(sizes) < 2:
        parser.error("--rounds, --puts and --steps must be positive, --sizes at least 2")
    for key, value in ENV.items():
        os.environ.setdefault(key, value)

    started = time.perf_counter()
    load_before = os.getloadavg()
    recorded = record_steps(max(sizes) + args.steps)
    outcomes = [Outcome(size) for size in sizes]
    with bench_database() as (url, where), tempfile.TemporaryDirectory(prefix="makima-bench-langgraph-") as tmp:
        migrate(url)
        world = build_world(url, 1, 1)
        owner = Principal(user_id=uuid.UUID(world.owner_id), role=Role.USER)
        db = PooledDatabase(url, min_size=1, max_size=2)

        def contract() -> str:
            # One contract per thread, as one agent works one contract.
            made = contracts_svc.create_contract(
                db, owner, name="bench langgraph", description="", contract_type="simple", phase_guard=False
            )
            return str(made.id)

        stack = start_stack(url, Path(tmp))
        print(f"database and stack ready ({where}) in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            with (
                MakimaCheckpointSaver(api_url=stack.base_url, token=world.token) as makima_saver,
                postgres_connection(url) as pg,
            ):
                postgres_saver = PostgresSaver(pg)
                postgres_saver.setup()
                savers: dict[str, tuple[BaseCheckpointSaver[Any], Callable[[], str | None]]] = {
                    "makima": (makima_saver, contract),
                    "makima-unbound": (makima_saver, lambda: None),
                    "postgres": (postgres_saver, lambda: None),
                }
                for o in outcomes:
                    print(f"measuring {o.size} messages ...", flush=True)
                    for saver, bind in savers.values():  # a warm-up round: connections, caches
                        run_round(saver, recorded, o.size, args.steps, args.steps, bind)
                    for _ in range(rounds):
                        for name, (saver, bind) in savers.items():
                            o.rounds[name].append(run_round(saver, recorded, o.size, puts, args.steps, bind))
                    print(
                        f"  makima {o.rate('makima'):,.0f} puts/s (unbound {o.rate('makima-unbound'):,.0f}), "
                        f"PostgresSaver {o.rate('postgres'):,.0f} puts/s, ratio {o.ratio():.2f}",
                        flush=True,
                    )
        finally:
            stack.stop()
            db.close()
    load_after = os.getloadavg()
    facts = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "server": where,
        "rounds": rounds,
        "puts_per_round": puts,
        "steps_per_thread": args.steps,
        "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    print()
    print(
        f"{rounds} rounds x {puts} puts per saver and size, one client, sequential (threads of {args.steps} steps); "
        f"messages of about {MESSAGE_BYTES} bytes; rates: medians over rounds; makima/PG: median of the rounds' "
        f"ratios; p50/p95 per put, pooled. Load average {load_before[0]:.2f} at start, {load_after[0]:.2f} at end."
    )
    print_table(outcomes)
    if args.json:
        args.json.write_text(json.dumps(as_json(outcomes, facts), indent=2) + "\n", encoding="utf-8")
    print(f"total runtime {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
