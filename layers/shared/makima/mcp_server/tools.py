"""The MCP tools: for a supervisor agent working a contract, and for the contract's owner.

Each tool is one or a few calls of the HTTP API under the caller's token (``access.py``); the API
decides what the caller may do (a daemon token cannot answer questions or force a phase, another owner's
contract is ``CONTRACT_NOT_FOUND``) and its errors come back as tool errors with their codes. The
descriptions are written for a model: what the tool does, when to use it, what each argument means.

One refusal is not an error here: a phase change on a contract with the phase guard answers
``PHASE_GUARD_REQUIRED`` until a person confirms it. ``request_phase_change`` returns that as a normal
result (``status: owner_confirmation_required``) telling the model to ask the owner, since it is the
expected course of a guarded contract, not a mistake to correct; the owner's ``confirm_phase_change``
confirms.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from makima.client.api import ApiError, MakimaApi
from makima.domain.durations import DURATION
from makima.domain.statuses import ContractStatus
from makima.domain.supervisors import SavePoint, SupervisorState
from makima.mcp_server.access import JSON, Access, refusal
from makima.mcp_server.waits import DEFAULT_WAIT_SECONDS, MAX_WAIT_SECONDS, wait_for_answer

# --- argument types (their descriptions are what the model reads) ------------------------------------

ContractId = Annotated[UUID, Field(description="The contract's id (a UUID, as the other tools return it).")]
TaskId = Annotated[UUID, Field(description="The task's id, as spawn_task returned it.")]
QuestionId = Annotated[UUID, Field(description="The question's id, as ask_owner or show_contract returned it.")]
PhaseId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="A phase id of the contract's type.")]
Reason = Annotated[
    str | None, Field(default=None, max_length=2000, description="Why, in a sentence (recorded in the event).")
]
WaitSeconds = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description=f"How long this call waits for the answer, in seconds (0 to {MAX_WAIT_SECONDS:g}). When "
        "it runs out the result says status 'waiting' with the question_id: call wait_for_answer with it.",
    ),
]
DaemonId = Annotated[
    UUID | None,
    Field(default=None, description="The id of the daemon (worker host) running the supervisor, if it has one."),
]

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False)
IDEMPOTENT = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False)

SUMMARY_FIELDS = (
    "id",
    "name",
    "contract_type",
    "status",
    "phase",
    "version",
    "phase_guard",
    "waiting_for",
    "last_activity_at",
)
RECENT_MESSAGES = 20


def optional(call: Any, *absent: str) -> Any:
    """``call()``, or None when the API answers one of the ``absent`` codes."""
    try:
        return call()
    except ApiError as exc:
        if exc.code in absent:
            return None
        raise


def next_phase(contract: JSON) -> str | None:
    phases = [str(p) for p in contract.get("phases") or []]
    current = str(contract["phase"])
    if current in phases and phases.index(current) + 1 < len(phases):
        return phases[phases.index(current) + 1]
    return None


def summary(contract: JSON) -> JSON:
    return {k: contract.get(k) for k in SUMMARY_FIELDS}


def context_of(api: MakimaApi, cid: str) -> JSON:
    """The contract, its current phase's deliverables and readiness, and its unanswered questions."""
    contract = api.contract(cid)
    readiness = optional(lambda: api.phase_readiness(cid), "FEATURE_DISABLED")
    pending = api.questions(cid, status="pending")
    return {
        "contract": contract,
        "current_phase": contract["phase"],
        "next_phase": next_phase(contract),
        "deliverables": contract.get("deliverables", []),
        "readiness": readiness,
        "pending_questions": [{"id": q["id"], "question": q["question"]} for q in pending],
    }


def register(server: MCPServer[Any], access: Access) -> None:
    """Add every tool to ``server``; each calls the API through ``access``."""
    _supervisor_tools(server, access)
    _owner_tools(server, access)


# --- the supervisor's tools ---------------------------------------------------------------------------


def _supervisor_tools(server: MCPServer[Any], access: Access) -> None:
    @server.tool(annotations=READ)
    async def get_contract_context(contract_id: ContractId, ctx: Context) -> CallToolResult:
        """Read the contract you work on: its status, current phase, the current phase's deliverables (which
        are done), the phase's readiness (what is still missing before it can advance, and whether it will
        advance by itself), and the owner's unanswered questions. Call it first, and again after any change
        whose effect you need to see. The same data is the resource makima://contracts/{contract_id}."""
        return await access.tool(ctx, lambda api: context_of(api, str(contract_id)))

    @server.tool(annotations=WRITE)
    async def start_supervisor(contract_id: ContractId, ctx: Context, daemon_id: DaemonId = None) -> CallToolResult:
        """Register yourself as the contract's supervisor and make the contract active. Call it once, when
        you take on a contract that has no supervisor yet (a contract 'created' and not started). A
        contract has at most one live supervisor: a second start is refused with CONFLICT; after a crash or
        restart use restore_supervisor instead. Then send heartbeats every heartbeat_interval_seconds."""
        cid, daemon = str(contract_id), str(daemon_id) if daemon_id else None
        return await access.tool(ctx, lambda api: api.start_supervisor(cid, daemon_id=daemon))

    @server.tool(annotations=IDEMPOTENT)
    async def mark_deliverable(
        contract_id: ContractId,
        deliverable_id: Annotated[
            str,
            Field(
                min_length=1,
                max_length=200,
                description="The deliverable's id, one of the current phase's (get_contract_context lists them).",
            ),
        ],
        ctx: Context,
        phase: Annotated[
            PhaseId | None, Field(default=None, description="The phase it belongs to; default the current phase.")
        ] = None,
    ) -> CallToolResult:
        """Mark a deliverable of the contract's phase as complete, once you have actually produced it. A
        deliverable that is not one of the phase's is refused with INVALID_DELIVERABLE, which lists the valid
        ones. Marking it again is harmless (already_completed). When this completes the phase's requirements
        the phase may advance by itself: the answer's contract shows the phase after it."""
        cid, did = str(contract_id), deliverable_id

        def work(api: MakimaApi) -> JSON:
            marked = api.complete_deliverable(cid, did, phase=phase)
            return {**marked, "contract": summary(marked["contract"])}

        return await access.tool(ctx, work)

    @server.tool(annotations=WRITE)
    async def spawn_task(
        contract_id: ContractId,
        name: Annotated[str, Field(min_length=1, max_length=500, description="What the task does, in a few words.")],
        ctx: Context,
    ) -> CallToolResult:
        """Record a new unit of work (a task) in the contract's current phase; it starts 'pending'. Use it
        for each piece of work you hand out or do, so the owner sees it and the phase's gate can count it:
        a phase whose gate needs all tasks complete does not advance while one is open. Returns the task
        with its id, which start_task and complete_task take."""
        cid, task = str(contract_id), name
        return await access.tool(ctx, lambda api: api.spawn_task(cid, task))

    @server.tool(annotations=IDEMPOTENT)
    async def start_task(contract_id: ContractId, task_id: TaskId, ctx: Context) -> CallToolResult:
        """Mark a pending task (from spawn_task) as running, when work on it begins, so the owner sees what is
        in progress. A task already finished cannot be started again."""
        cid, tid = str(contract_id), str(task_id)
        return await access.tool(ctx, lambda api: api.set_task_status(cid, tid, "running"))

    @server.tool(annotations=WRITE)
    async def complete_task(
        contract_id: ContractId,
        task_id: TaskId,
        ctx: Context,
        outcome: Annotated[
            Literal["completed", "failed"],
            Field(description="'completed' when the work is done, 'failed' when it cannot be."),
        ] = "completed",
        error: Annotated[
            str | None,
            Field(default=None, max_length=10_000, description="With 'failed': what went wrong."),
        ] = None,
    ) -> CallToolResult:
        """Finish a task (pending or running): completed, or failed with an error. A finished task cannot be
        moved again. Finishing the last open task may satisfy the phase's gate, and the phase may advance
        (or the contract complete) by itself: the result carries the contract as it is afterwards."""
        cid, tid = str(contract_id), str(task_id)

        def work(api: MakimaApi) -> JSON:
            task = api.set_task_status(cid, tid, outcome, error=error)
            return {"task": task, "contract": summary(api.contract(cid))}

        return await access.tool(ctx, work)

    @server.tool(annotations=WRITE)
    async def request_phase_change(
        contract_id: ContractId,
        ctx: Context,
        phase: Annotated[
            PhaseId | None,
            Field(default=None, description="The phase to enter; default the next one. Only the next may be entered."),
        ] = None,
        reason: Reason = None,
    ) -> CallToolResult:
        """Ask to move the contract to its next phase, when the current phase's work is done but it did not
        advance by itself. The current phase's requirements must be met (otherwise the error
        VALIDATION_FAILED lists missing_requirements: do that work first).

        The phase guard: a contract with phase_guard on never changes phase without its owner's
        confirmation. Then this tool changes nothing and returns status 'owner_confirmation_required':
        tell the owner (ask_owner or send_message) that the phase is ready and wait; the owner confirms
        with confirm_phase_change. Do not retry in a loop."""
        cid = str(contract_id)

        def work(api: MakimaApi) -> JSON:
            contract = api.contract(cid)
            target = phase or next_phase(contract)
            if target is None:
                raise refusal(
                    "INVALID_TRANSITION",
                    f"{contract['phase']} is the last phase: the contract completes when its gate is met "
                    "(by itself, or after the owner confirms when the phase guard is on)",
                    current_phase=contract["phase"],
                )
            body: JSON = {"phase": target, "expected_version": contract["version"]}
            if reason:
                body["reason"] = reason
            try:
                after = api.post(f"/contracts/{cid}/phase", body)
            except ApiError as exc:
                if exc.code != "PHASE_GUARD_REQUIRED":
                    raise
                return {
                    "status": "owner_confirmation_required",
                    "current_phase": exc.details.get("current_phase", contract["phase"]),
                    "target_phase": exc.details.get("target_phase", target),
                    "deliverables": exc.details.get("deliverables", []),
                    "message": "This contract has the phase guard on: nothing changed. The owner must confirm "
                    "the phase change (their confirm_phase_change tool). Tell them the phase is ready, then "
                    "wait; get_contract_context shows the phase once they confirmed.",
                }
            return {"status": "changed", "contract": summary(after)}

        return await access.tool(ctx, work)

    @server.tool(annotations=WRITE)
    async def ask_owner(
        contract_id: ContractId,
        question: Annotated[
            str, Field(min_length=1, max_length=10_000, description="The question, complete enough to answer alone.")
        ],
        ctx: Context,
        wait_seconds: WaitSeconds = DEFAULT_WAIT_SECONDS,
        options: Annotated[
            list[Annotated[str, Field(max_length=1000)]] | None,
            Field(default=None, max_length=50, description="Answers to choose from, if the question has a few."),
        ] = None,
        task_id: Annotated[
            UUID | None, Field(default=None, description="The task the question is about, if any.")
        ] = None,
    ) -> CallToolResult:
        """Ask the contract's owner (a person) a question, and wait a while for the answer. Use it when you
        cannot go on without a decision or information only the owner has. The contract is
        'waiting_for_input' until the question is answered, and a phase whose gate has no_pending_questions
        does not advance while it is open.

        Returns status 'answered' with the answer, or, when wait_seconds ran out first, status 'waiting'
        with the question_id: then call wait_for_answer with that id (as many times as needed; the question
        stays asked meanwhile, even if you restart). Do not ask the same question again."""
        cid = str(contract_id)

        def work(api: MakimaApi) -> JSON:
            body: JSON = {"question": question}
            if options:
                body["question_type"] = "choice"
                body["options"] = options
            if task_id:
                body["task_id"] = str(task_id)
            asked = api.post(f"/contracts/{cid}/questions", body, replayable=True)
            return wait_for_answer(api, cid, str(asked["id"]), min(wait_seconds, access.max_wait_seconds))

        return await access.tool(ctx, work)

    @server.tool(name="wait_for_answer", annotations=IDEMPOTENT)
    async def wait_for_answer_tool(
        contract_id: ContractId, question_id: QuestionId, ctx: Context, wait_seconds: WaitSeconds = DEFAULT_WAIT_SECONDS
    ) -> CallToolResult:
        """Keep waiting for the owner's answer to a question asked earlier (ask_owner returned status
        'waiting' and this question_id). Returns status 'answered' with the answer, or 'waiting' again when
        wait_seconds ran out: call again later. Works after a restart too: the question lives in the
        contract, not in this conversation."""
        cid, qid = str(contract_id), str(question_id)
        return await access.tool(
            ctx, lambda api: wait_for_answer(api, cid, qid, min(wait_seconds, access.max_wait_seconds))
        )

    @server.tool(annotations=WRITE)
    async def send_message(
        contract_id: ContractId,
        content: Annotated[str, Field(min_length=1, max_length=100_000, description="The message text.")],
        ctx: Context,
    ) -> CallToolResult:
        """Post a message in the contract's chat, for the owner to read (progress, a summary, a note). It
        asks nothing and waits for nothing: to get an answer, use ask_owner."""
        cid, text = str(contract_id), content
        return await access.tool(ctx, lambda api: api.post(f"/contracts/{cid}/messages", {"content": text}))

    @server.tool(annotations=WRITE)
    async def heartbeat(
        contract_id: ContractId,
        state: Annotated[
            SupervisorState,
            Field(description="What you are doing: working, waiting_for_user, waiting_for_tasks, idle, blocked, …"),
        ],
        ctx: Context,
        progress: Annotated[int, Field(ge=0, le=100, description="Rough progress of the contract, 0 to 100.")] = 0,
        current_activity: Annotated[
            str, Field(max_length=2000, description="One line: what you are doing right now.")
        ] = "",
        pending_task_ids: Annotated[
            list[UUID] | None, Field(default=None, max_length=1000, description="Tasks you are waiting on.")
        ] = None,
    ) -> CallToolResult:
        """Tell the service you are alive and what you are doing. Send one at least every
        heartbeat_interval_seconds (start_supervisor and restore_supervisor say how often): a supervisor
        silent for longer than the timeout is marked dead. The answer may ask you to act:
        sync_requested (call save_state now), restart_requested (save_state with save_point 'shutdown', then
        stop), superseded (another instance took over: stop at once, save nothing)."""
        cid = str(contract_id)

        def work(api: MakimaApi) -> JSON:
            status = api.supervisor_status(cid)
            contract = api.contract(cid)
            message: JSON = {
                "task_id": status["task_id"],
                "state": state.value,
                "phase": contract["phase"],
                "current_activity": current_activity,
                "progress": progress,
                "pending_task_ids": [str(t) for t in pending_task_ids or []],
                "timestamp": datetime.now(UTC).isoformat(),
                "generation": status["generation"],
            }
            return api.supervisor_heartbeat(cid, message)

        return await access.tool(ctx, work)

    @server.tool(annotations=WRITE)
    async def save_state(
        contract_id: ContractId,
        save_point: Annotated[
            SavePoint,
            Field(
                description="Why you save now: llm_response (after a reply of yours), task_spawn, question_asked, "
                "phase_change, heartbeat (a light update), shutdown (you are stopping on purpose)."
            ),
        ],
        state: Annotated[SupervisorState, Field(description="Your state, as in heartbeat.")],
        ctx: Context,
        current_activity: Annotated[str, Field(max_length=2000, description="One line: what you are doing.")] = "",
        messages: Annotated[
            list[dict[str, Any]] | None,
            Field(
                default=None,
                max_length=500,
                description="New conversation messages since your last save (e.g. {'role': 'assistant', "
                "'content': '…'}), appended to the stored conversation that restore_supervisor gives back.",
            ),
        ] = None,
        checkpoint: Annotated[
            bool, Field(description="Also keep this state as the last good checkpoint to fall back to.")
        ] = False,
        waiting_on_task_ids: Annotated[
            list[UUID] | None, Field(default=None, max_length=1000, description="Tasks you wait on; default unchanged.")
        ] = None,
        error: Annotated[str | None, Field(default=None, max_length=10_000, description="An error to record.")] = None,
    ) -> CallToolResult:
        """Persist your state at a save point, so that you (or another instance) can resume from it after a
        crash or a restart with restore_supervisor. Save after each reply that changed something, when you
        spawn tasks or ask questions, at phase changes, and with save_point 'shutdown' before stopping on
        purpose. Only the new messages are sent each time; the stored ones are kept. A CONFLICT error with
        reason 'superseded' means another instance took over: stop."""
        cid = str(contract_id)

        def work(api: MakimaApi) -> JSON:
            stored = api.state_page(cid)
            contract = api.contract(cid)
            body: JSON = {
                "generation": stored["generation"],
                "seq": int(stored["save_seq"]) + 1,
                "save_point": save_point.value,
                "state": state.value,
                "phase": contract["phase"],
                "current_activity": current_activity,
                "conversation_offset": stored["conversation_length"],
                "conversation_append": messages or [],
                "pending_questions": stored.get("pending_questions") or [],
                "spawned_task_ids": stored.get("spawned_task_ids") or [],
                "waiting_on_task_ids": (
                    [str(t) for t in waiting_on_task_ids]
                    if waiting_on_task_ids is not None
                    else stored.get("waiting_on_task_ids") or []
                ),
                "error": error,
                "checkpoint": checkpoint,
            }
            return api.save_state(cid, body)

        return await access.tool(ctx, work)

    @server.tool(annotations=WRITE)
    async def restore_supervisor(
        contract_id: ContractId,
        ctx: Context,
        daemon_id: DaemonId = None,
        recent_messages: Annotated[
            int, Field(ge=0, le=500, description="How many of the newest stored conversation messages to return.")
        ] = RECENT_MESSAGES,
    ) -> CallToolResult:
        """Take the contract's supervisor over after a restart or a crash (yours or another instance's):
        the service checks the saved state, resumes from it (or from the last checkpoint, or fresh), and
        tells you in restoration_context what happened, which questions are still pending, which answers
        arrived meanwhile and which tasks to wait on. Read restoration_context first and carry on from it.
        The instance you replace is superseded (its saves and heartbeats are refused)."""
        cid, daemon = str(contract_id), str(daemon_id) if daemon_id else None

        def work(api: MakimaApi) -> JSON:
            restored = api.restore(cid, daemon_id=daemon)
            history = list(restored.get("conversation_history") or [])
            kept = history[-recent_messages:] if recent_messages else []
            answer = {k: v for k, v in restored.items() if k not in ("conversation_history", "next_after_seq")}
            answer["recent_messages"] = kept
            answer["messages_not_shown"] = len(history) - len(kept)
            return answer

        return await access.tool(ctx, work)


# --- the owner's tools --------------------------------------------------------------------------------


def _owner_tools(server: MCPServer[Any], access: Access) -> None:
    @server.tool(annotations=WRITE)
    async def create_contract(
        name: Annotated[str, Field(min_length=1, max_length=200, description="A short name for the work.")],
        ctx: Context,
        description: Annotated[
            str, Field(max_length=10_000, description="What is to be done, for the supervisor.")
        ] = "",
        contract_type: Annotated[
            str,
            Field(
                pattern=r"^[a-z][a-z0-9_-]{0,63}$",
                description="The contract type, which sets the phases and their deliverables: 'simple' (plan, "
                "execute), 'specification' (research, specify, plan, execute, review), or a custom one.",
            ),
        ] = "simple",
        phase_guard: Annotated[
            bool,
            Field(description="When true, no phase change (or completion) happens without your confirmation."),
        ] = False,
    ) -> CallToolResult:
        """Create a contract (a unit of agent work you own), in its type's first phase, status 'created' until
        a supervisor starts on it. With phase_guard, every phase change waits for your
        confirm_phase_change."""
        fields = {"description": description, "phase_guard": phase_guard}
        return await access.tool(ctx, lambda api: api.create_contract(name, contract_type=contract_type, **fields))

    @server.tool(annotations=READ)
    async def list_contracts(
        ctx: Context,
        status: Annotated[
            list[ContractStatus] | None, Field(default=None, description="Only contracts in one of these statuses.")
        ] = None,
        phase: Annotated[PhaseId | None, Field(default=None, description="Only contracts in this phase.")] = None,
        stale: Annotated[bool, Field(description="Only stale contracts: not finished, idle past threshold.")] = False,
        threshold: Annotated[
            str | None,
            Field(
                default=None,
                pattern=DURATION,
                description="Staleness threshold, e.g. 30m, 2h, 7d (default 30m); implies stale.",
            ),
        ] = None,
        waiting: Annotated[
            bool, Field(description="Only contracts waiting for input (a question, a confirmation).")
        ] = (False),
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many, newest first.")] = 50,
    ) -> CallToolResult:
        """List your contracts, newest first, each summarised (id, name, type, status, phase, version,
        phase_guard, what it waits for, last activity). Filters combine. Use waiting=true to find what needs
        you: questions to answer, phase changes to confirm."""
        params: JSON = {}
        if status:
            params["status"] = ",".join(s.value for s in status)
        if phase:
            params["phase"] = phase
        if stale or threshold:
            params["stale"] = "true"
            params["threshold"] = threshold or "30m"
        if waiting:
            params["waiting"] = "true"

        def work(api: MakimaApi) -> JSON:
            found: list[JSON] = []
            more = False
            for contract in api.pages("/contracts", "contracts", page_size=min(limit + 1, 200), **params):
                if len(found) == limit:
                    more = True
                    break
                found.append(summary(contract))
            return {"contracts": found, "more": more}

        return await access.tool(ctx, work)

    @server.tool(annotations=READ)
    async def show_contract(contract_id: ContractId, ctx: Context) -> CallToolResult:
        """Everything about one contract: its details and current phase's deliverables, readiness, tasks,
        questions (pending ones need your answer_question), and its supervisor's status (alive, state,
        progress, activity). Its event log is the resource makima://contracts/{contract_id}/events."""
        cid = str(contract_id)

        def work(api: MakimaApi) -> JSON:
            shown = context_of(api, cid)
            shown["tasks"] = api.tasks(cid)
            shown["questions"] = api.questions(cid)
            shown["supervisor"] = optional(lambda: api.supervisor_status(cid), "SUPERVISOR_NOT_FOUND")
            return shown

        return await access.tool(ctx, work)

    @server.tool(annotations=WRITE)
    async def answer_question(
        contract_id: ContractId,
        question_id: QuestionId,
        answer: Annotated[str, Field(min_length=1, max_length=100_000, description="Your answer.")],
        ctx: Context,
    ) -> CallToolResult:
        """Answer a supervisor's question on your contract (show_contract or list_contracts waiting=true
        find them). When no question is left pending the contract is active again and the supervisor gets
        the answer. People only: a supervisor's (daemon) token is refused with FORBIDDEN."""
        cid, qid, text = str(contract_id), str(question_id), answer
        return await access.tool(ctx, lambda api: api.answer_question(cid, qid, text))

    @server.tool(annotations=WRITE)
    async def confirm_phase_change(
        contract_id: ContractId,
        ctx: Context,
        phase: Annotated[
            PhaseId | None,
            Field(
                default=None,
                description="The phase to enter; default the one the contract waits to enter (or the next).",
            ),
        ] = None,
        force: Annotated[
            bool,
            Field(
                description="Also move if the current phase's requirements are not met (recorded as forced, "
                "with what was skipped). People only."
            ),
        ] = False,
        reason: Reason = None,
    ) -> CallToolResult:
        """Confirm a phase change on your contract: the phase guard's yes. A contract with phase_guard on
        stops when a phase is ready (status waiting_for_input, waiting_for 'phase_confirmation:<phase>')
        or when it is ready to complete ('completion_confirmation'); this moves it on, or completes it. It
        also moves a contract whose supervisor asked for a phase change. Check show_contract first: it
        shows what was delivered. People only: a supervisor's (daemon) token is refused with FORBIDDEN,
        since the guard exists for a person to look before the contract moves on."""
        cid = str(contract_id)

        def work(api: MakimaApi) -> JSON:
            contract = api.contract(cid)
            require_person(api, contract)
            waiting_for = str(contract.get("waiting_for") or "")
            if phase is None and waiting_for == "completion_confirmation":
                checked = api.check_completion(cid, confirmed=True)
                return {"status": "completed" if checked.get("completed") else "not_completed", **checked}
            target = phase
            if target is None and waiting_for.startswith("phase_confirmation:"):
                target = waiting_for.partition(":")[2]
            target = target or next_phase(contract)
            if target is None:
                raise refusal(
                    "INVALID_TRANSITION",
                    f"{contract['phase']} is the last phase and the contract does not wait for a completion "
                    "confirmation: nothing to confirm",
                    current_phase=contract["phase"],
                )
            body: JSON = {"phase": target, "expected_version": contract["version"], "confirmed": True}
            if force:
                body["force"] = True
            if reason:
                body["reason"] = reason
            after = api.post(f"/contracts/{cid}/phase", body)
            return {"status": "changed", "contract": summary(after)}

        return await access.tool(ctx, work)

    @server.tool(annotations=WRITE)
    async def pause_contract(
        contract_id: ContractId,
        reason: Annotated[str, Field(min_length=1, max_length=2000, description="Why (recorded in the event).")],
        ctx: Context,
    ) -> CallToolResult:
        """Pause your contract: it stops moving by itself (no auto-advance, never stale) until resumed. The
        supervisor keeps its state."""
        cid = str(contract_id)
        return await access.tool(ctx, lambda api: _set_status(api, cid, ContractStatus.PAUSED, reason))

    @server.tool(annotations=WRITE)
    async def resume_contract(contract_id: ContractId, ctx: Context, reason: Reason = None) -> CallToolResult:
        """Resume your contract (from paused, blocked, waiting or failed): back to active. If its phase's
        requirements were met meanwhile it advances (or completes) at once."""
        cid = str(contract_id)
        return await access.tool(ctx, lambda api: _set_status(api, cid, ContractStatus.ACTIVE, reason))


def require_person(api: MakimaApi, contract: JSON) -> None:
    """Refuse a daemon (supervisor) token: ``FORBIDDEN``. The API lets every caller send ``confirmed``
    (seed 1.3: supervisors too must send it), so the phase guard's question, "has a person seen this?",
    is asked here, for the tool that is the owner's yes. The check is a read the API answers 403 to daemon
    tokens only (listing the owner's tokens: people and admins may, one item is asked for)."""
    try:
        api.get(f"/users/{contract['owner_id']}/tokens", limit=1)
    except ApiError as exc:
        if exc.code != "FORBIDDEN":
            raise
        raise ApiError(
            403,
            "FORBIDDEN",
            "confirm_phase_change is the owner's confirmation of the phase guard: a supervisor's (daemon) "
            "token cannot give it. Tell the owner the phase is ready (ask_owner or send_message) and wait.",
            {"contract_id": contract["id"]},
        ) from exc


def _set_status(api: MakimaApi, cid: str, status: ContractStatus, reason: str | None) -> JSON:
    """The status change at the version just read (a concurrent change is refused with VERSION_CONFLICT)."""
    before = api.contract(cid)
    body: JSON = {"status": status.value, "expected_version": before["version"]}
    if reason:
        body["reason"] = reason
    after = api.post(f"/contracts/{cid}/status", body)
    return {"previous_status": before["status"], "contract": summary(after)}
