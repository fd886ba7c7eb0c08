"""A LangGraph agent that works a makima contract, checkpointed in makima: kill it, and another process
resumes it from its last checkpoint and finishes the work, without redoing a step.

No LLM and no API key: the agent's "model" is langchain-core's ``FakeMessagesListChatModel`` fed a script
that is made from the contract's type (for each phase: open a task, mark each deliverable, complete the
task). A real model decides its next message from the conversation; this one picks it by how many
replies the conversation already holds, so a resumed process carries on where the checkpoint left it.
The tools do real work on the contract through makima's SDK (``makima.client.MakimaApi``), and every
step of the graph is checkpointed by ``MakimaCheckpointSaver`` on the thread bound to the contract
(``configurable.contract_id``): each checkpoint refreshes the contract's supervisor, and a second process
that picks the thread up restores the supervisor (generation + 1), so makima records the takeover and
refuses the old process from then on.

Run it against ``makima dev``:

    pip install -e '.[langgraph]'            # langgraph, langchain-core (makima[dev] has them)
    makima dev                               # in another terminal: prints the admin token once
    export MAKIMA_TOKEN=mkm_...              # the token is read from the environment, never from argv

    # 1. Create a contract and work it; block before step 4 (steps 1-3 done and checkpointed):
    python examples/langgraph_agent.py --api-url http://127.0.0.1:8000 --hang-after 3
    #   {"event": "start", "contract_id": "…", "thread_id": "…", "pid": 4242, "resumed": false, …}
    #   {"event": "step", "step": 1, "tool": "open_task", …}  … step 3
    #   {"event": "hanging", "before_step": 4, "pid": 4242}
    kill -9 4242                             # a hard crash: no goodbye, no last save

    # 2. Resume the thread in a new process: steps 4.. only, then the contract is completed:
    python examples/langgraph_agent.py --api-url http://127.0.0.1:8000 --contract-id <id> --thread-id <thread>
    #   {"event": "start", …, "resumed": true, "checkpoint_messages": 8}   (the request, 3 steps' call
    #        and result, and the model's reply that called step 4: decided before the kill, not redone)
    #   {"event": "step", "step": 4, …} … step 7
    #   {"event": "done", "contract_status": "completed", "messages": 16, "steps_here": [4, 5, 6, 7], …}

    makima contracts events <id>             # what makima recorded, the takeover among it:
    #   #10  …  supervisor_restored  mode fresh, generation 2
    #   #11  …  supervisor_state_changed  working → initializing (recovered)

``--crash-after N`` kills the process itself (SIGKILL) at the same point, for a one-terminal demo.
``--contract-type`` picks the type of a created contract (``simple`` by default; ``specification`` has
more phases). Any token that may work the contract will do: the admin's, its owner's, or a daemon token
of the owner (what a supervisor host would use).

The output is one JSON object per line (``tests/e2e/test_langgraph_example.py`` reads it). Each tool
first looks at what the service already holds (a task of that name, a deliverable already marked), so a
crash between a tool's effect and its checkpoint repeats nothing either.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from makima.client import MakimaApi
from makima.integrations.langgraph import MakimaCheckpointSaver

FINAL = "Every deliverable is marked and every task completed: the contract's work is done."


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed: a process killed right after still has it printed."""
    print(json.dumps({"event": event, **fields}), flush=True)


# --------------------------------------------------------------------------------------------------
# The script: what the agent does, made from the contract's type


@dataclass(frozen=True)
class Step:
    tool: str
    args: dict[str, str]


def plan_for(api: MakimaApi, contract_id: str) -> list[Step]:
    """For each phase of the contract's type, in order: open a task, mark each deliverable, complete the
    task (the phase's gate wants its tasks completed; then makima advances the phase by itself). The
    same list in every process: it depends on the contract type only, not on what is done already."""
    steps: list[Step] = []
    for phase in api.deliverables(contract_id)["phases"]:
        task = f"{phase['id']}-work"
        steps.append(Step("open_task", {"name": task}))
        steps.extend(
            Step("mark_deliverable", {"phase": phase["id"], "deliverable": d["id"]}) for d in phase["deliverables"]
        )
        steps.append(Step("complete_task", {"name": task}))
    return steps


def scripted_reply(plan: Sequence[Step], messages: Sequence[BaseMessage]) -> AIMessage:
    """The model's next message: the step after the replies already in the conversation, as a tool call,
    then the final answer. Produced by ``FakeMessagesListChatModel`` like any chat model's reply."""
    done = sum(1 for m in messages if isinstance(m, AIMessage))
    if done < len(plan):
        step = plan[done]
        reply = AIMessage(
            content=f"Step {done + 1}: {step.tool} {json.dumps(step.args)}",
            tool_calls=[{"name": step.tool, "args": step.args, "id": f"call-{done + 1}", "type": "tool_call"}],
        )
    else:
        reply = AIMessage(content=FINAL)
    model = FakeMessagesListChatModel(responses=[reply])
    answer = model.invoke(list(messages))
    assert isinstance(answer, AIMessage)
    return answer


# --------------------------------------------------------------------------------------------------
# The tools: real contract work through the SDK, each idempotent against what makima holds


class Work:
    """The tools of one contract, counting the steps this process runs. ``stop_before``: the step at
    which to stop (``hang``: block until killed; ``crash``: SIGKILL itself), before doing its work."""

    def __init__(self, api: MakimaApi, contract_id: str, *, stop_before: int | None = None, how: str = "hang") -> None:
        self.api = api
        self.contract_id = contract_id
        self.stop_before = stop_before
        self.how = how
        self.steps_here: list[int] = []

    def _step(self, tool_call_id: str, tool_name: str) -> int:
        step = int(tool_call_id.removeprefix("call-"))
        if step == self.stop_before:
            emit("hanging" if self.how == "hang" else "crashing", before_step=step, pid=os.getpid())
            if self.how == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            threading.Event().wait()  # until killed
        self.steps_here.append(step)
        emit("step", step=step, tool=tool_name, pid=os.getpid())
        return step

    def _task(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.api.tasks(self.contract_id) if t["name"] == name and not t["is_supervisor"]), None)

    def tools(self) -> list[BaseTool]:
        @tool
        def open_task(name: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
            """Open a task of this name on the contract (adopts one that exists already)."""
            self._step(tool_call_id, "open_task")
            task = self._task(name)
            if task is not None:
                return f"task {name} already open ({task['id']})"
            created = self.api.spawn_task(self.contract_id, name)
            return f"task {name} opened ({created['id']})"

        @tool
        def mark_deliverable(phase: str, deliverable: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
            """Mark a deliverable of a phase completed (a no-op when it is already)."""
            self._step(tool_call_id, "mark_deliverable")
            phases = self.api.deliverables(self.contract_id)["phases"]
            held = next(d for p in phases if p["id"] == phase for d in p["deliverables"] if d["id"] == deliverable)
            if held["completed"]:
                return f"{phase}/{deliverable} was already marked"
            contract = self.api.complete_deliverable(self.contract_id, deliverable, phase=phase)["contract"]
            return f"{phase}/{deliverable} marked (contract in phase {contract['phase']}, {contract['status']})"

        @tool
        def complete_task(name: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
            """Complete the task of this name (the phase's gate wants its tasks completed)."""
            self._step(tool_call_id, "complete_task")
            task = self._task(name)
            if task is None:
                return f"no task named {name}"
            if task["status"] != "completed":
                self.api.set_task_status(self.contract_id, str(task["id"]), "completed")
            contract = self.api.contract(self.contract_id)
            return f"task {name} completed (contract in phase {contract['phase']}, {contract['status']})"

        return [open_task, mark_deliverable, complete_task]


# --------------------------------------------------------------------------------------------------
# The graph


def build_graph(
    plan: Sequence[Step], tools: list[BaseTool], saver: BaseCheckpointSaver[Any]
) -> CompiledStateGraph[Any]:
    """agent -> tools -> agent … -> end: the shape of a tool-calling agent (``create_react_agent``)."""

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [scripted_reply(plan, state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=False))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=saver)


def run(args: argparse.Namespace, token: str) -> int:
    with MakimaApi(args.api_url, token) as api, MakimaCheckpointSaver(api_url=args.api_url, token=token) as saver:
        contract_id = args.contract_id
        if contract_id is None:
            contract_id = str(api.create_contract(args.name, contract_type=args.contract_type)["id"])
        thread_id = args.thread_id or f"agent-{uuid.uuid4().hex[:12]}"
        config: RunnableConfig = {"configurable": {"thread_id": thread_id, "contract_id": contract_id}}
        plan = plan_for(api, contract_id)
        stop_before = args.hang_after if args.hang_after is not None else args.crash_after
        work = Work(
            api,
            contract_id,
            stop_before=None if stop_before is None else stop_before + 1,
            how="hang" if args.hang_after is not None else "crash",
        )
        graph = build_graph(plan, work.tools(), saver)

        before = graph.get_state(config)
        resumed = bool(before.values.get("messages"))
        emit(
            "start",
            contract_id=contract_id,
            thread_id=thread_id,
            pid=os.getpid(),
            resumed=resumed,
            checkpoint_messages=len(before.values.get("messages", [])),
            plan_steps=len(plan),
        )
        # durability="sync": each step's checkpoint is stored before the next step starts, so a kill
        # loses at most the step in progress (LangGraph's default, "async", writes it meanwhile).
        if resumed:
            # None: no new input; the graph carries on from the thread's last checkpoint.
            final = graph.invoke(None, config, durability="sync")
        else:
            ask = HumanMessage(f"Work contract {contract_id} to completion.")
            final = graph.invoke({"messages": [ask]}, config, durability="sync")

        messages: list[BaseMessage] = final["messages"]
        contract = api.contract(contract_id)
        emit(
            "done",
            contract_id=contract_id,
            thread_id=thread_id,
            contract_status=contract["status"],
            phase=contract["phase"],
            messages=len(messages),
            tool_calls=[c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls],
            steps_here=work.steps_here,
            final=str(messages[-1].content),
        )
        return 0 if contract["status"] == "completed" else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--api-url", default=os.environ.get("MAKIMA_API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--contract-id", help="the contract to work (default: create one)")
    parser.add_argument("--contract-type", default="simple", help="of a created contract")
    parser.add_argument("--name", default="langgraph agent example", help="of a created contract")
    parser.add_argument("--thread-id", help="the LangGraph thread: give the first run's to resume it")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--hang-after", type=int, metavar="N", help="after step N is checkpointed, block (kill -9 it)")
    stop.add_argument("--crash-after", type=int, metavar="N", help="after step N is checkpointed, SIGKILL itself")
    args = parser.parse_args(argv)
    token = os.environ.get("MAKIMA_TOKEN")
    if not token:
        parser.error("set MAKIMA_TOKEN (the token is never taken from the arguments: ps shows them)")
    return run(args, token)


if __name__ == "__main__":
    sys.exit(main())
