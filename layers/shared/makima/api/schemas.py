"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from makima.api.compat import StatusView, current_view
from makima.api.paging import next_cursor
from makima.domain.models import ApiToken, ChatMessage, Contract, ContractEvent, Question, Task, User
from makima.domain.principals import Role
from makima.domain.statuses import LEGACY_STATUS, ContractStatus
from makima.domain.strict import NO_BOOL, Bool, Int
from makima.domain.tasks import TaskStatus
from makima.services.contracts import ContractDetail

_SLUG = r"^[a-z][a-z0-9_-]{0,63}$"
# PostgreSQL text cannot hold NUL; refuse it at the edge with a 422 rather than fail in the database.
TEXT = r"^[^\x00]*$"


class Body(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than a silent no-op."""

    model_config = ConfigDict(extra="forbid")


# The version an owner's action was decided on (issue 16): a 409 VERSION_CONFLICT, with the current
# version, when the contract has changed since; absent, nothing is checked (the clients from before it).
ExpectedVersion = Annotated[
    Annotated[int, Field(ge=1, le=2_147_483_647), NO_BOOL] | None,
    Field(
        default=None,
        description="The contract's version the action was decided on: 409 VERSION_CONFLICT (with the "
        "current version) and nothing changed when the contract has changed since. Omit it to act "
        "whatever the version.",
    ),
]


# --- errors -------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(examples=["VERSION_CONFLICT"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    error: ErrorBody


# --- contracts ----------------------------------------------------------------------------------------


class ContractCreate(Body):
    name: str = Field(pattern=TEXT, min_length=1, max_length=200)
    description: str = Field(pattern=TEXT, default="", max_length=10_000)
    contract_type: str = Field(default="simple", pattern=_SLUG)
    phase_guard: Bool = False
    auto_complete_enabled: Bool | None = Field(
        default=None, description="Advance and complete by itself when gates are met; defaults to the setting."
    )


class ContractUpdate(Body):
    name: str | None = Field(pattern=TEXT, default=None, min_length=1, max_length=200)
    description: str | None = Field(pattern=TEXT, default=None, max_length=10_000)
    phase_guard: Bool | None = None
    expected_version: Annotated[int, Field(ge=1, le=2_147_483_647), NO_BOOL] | None = None


class ContractOut(BaseModel):
    id: UUID
    name: str
    description: str
    contract_type: str
    phase: str
    status: ContractStatus = Field(
        description="The status; with `X-Makima-Status: legacy` (or the enhanced_contract_status flag off) "
        "one of the original three."
    )
    enhanced_status: ContractStatus = Field(description="The status among all nine, whatever view was asked for.")
    version: int
    phase_guard: bool
    owner_id: UUID
    status_changed_at: datetime
    last_activity_at: datetime
    waiting_for: str | None
    blocked_reason: str | None
    failure_reason: str | None
    auto_complete_enabled: bool
    completion_detected_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Deprecated names kept for clients of the original API (seed: backwards compatibility).
    type: str = Field(description="Deprecated alias of contract_type.")
    current_phase: str = Field(description="Deprecated alias of phase.")
    legacy_status: Literal["active", "completed", "archived"] = Field(
        description="The status folded onto the original three (active, completed, archived)."
    )

    @classmethod
    def of(cls, c: Contract) -> ContractOut:
        """The contract as the request asked to see it (``api/compat.py``: the legacy view folds ``status``)."""
        legacy = LEGACY_STATUS[c.status]
        fields = c.model_dump()
        fields["status"] = legacy if current_view() is StatusView.LEGACY else c.status
        return cls(
            **fields,
            enhanced_status=c.status,
            type=c.contract_type,
            current_phase=c.phase,
            legacy_status=legacy.value,
        )


class DeliverableOut(BaseModel):
    id: str
    name: str
    completed: bool
    completed_at: datetime | None


class PhaseOut(BaseModel):
    id: str
    name: str
    deliverables: list[DeliverableOut]


class ContractDetailOut(ContractOut):
    phases: list[str]
    deliverables: list[DeliverableOut] = Field(description="Deliverables of the current phase.")

    @classmethod
    def of_detail(cls, d: ContractDetail) -> ContractDetailOut:
        base = ContractOut.of(d.contract).model_dump()
        return cls(
            **base,
            phases=d.contract_type.phase_ids,
            deliverables=[DeliverableOut(**vars(x)) for x in d.deliverables],
        )


class ContractList(BaseModel):
    contracts: list[ContractOut]
    next_cursor: str | None = Field(description="Pass as cursor to get the next page; null on the last page.")


class PhaseChange(Body):
    phase: str = Field(pattern=_SLUG)
    expected_version: Int = Field(ge=1, le=2_147_483_647)
    confirmed: Bool = False
    force: Bool = Field(
        default=False,
        description="Move past unmet phase requirements, skip a phase or go back (people only; recorded in the event).",
    )
    reason: str | None = Field(pattern=TEXT, default=None, max_length=2000)


class StatusChange(Body):
    status: ContractStatus
    reason: str | None = Field(pattern=TEXT, default=None, max_length=2000)
    expected_version: Annotated[int, Field(ge=1, le=2_147_483_647), NO_BOOL] | None = None


class DeliverableComplete(Body):
    deliverable_id: str = Field(min_length=1, max_length=64)
    phase: str | None = Field(default=None, pattern=_SLUG, description="Defaults to the current phase.")
    expected_version: ExpectedVersion = None


class DeliverableCompleted(BaseModel):
    contract: ContractOut
    phase: str
    deliverable_id: str
    completed_by: str
    completed_at: datetime
    already_completed: bool


class EventOut(BaseModel):
    id: int
    type: str
    contract_id: UUID | None
    actor: str
    created_at: datetime
    payload: dict[str, Any]

    @classmethod
    def of(cls, e: ContractEvent) -> EventOut:
        return cls(**e.model_dump())


class EventList(BaseModel):
    events: list[EventOut]
    last_id: int = Field(description="Pass as after_id to continue from here (or follow next_cursor).")
    next_cursor: str | None = next_cursor()


# --- tasks --------------------------------------------------------------------------------------------


class TaskCreate(Body):
    name: str = Field(pattern=TEXT, min_length=1, max_length=200)
    is_supervisor: Bool = False
    daemon: str | None = Field(pattern=TEXT, default=None, max_length=200)


class TaskStatusChange(Body):
    status: TaskStatus
    error: str | None = Field(pattern=TEXT, default=None, max_length=10_000)


class TaskOut(Task):
    pass


class TaskList(BaseModel):
    tasks: list[TaskOut]
    next_cursor: str | None = next_cursor()


# --- questions ----------------------------------------------------------------------------------------


class QuestionCreate(Body):
    question: str = Field(pattern=TEXT, min_length=1, max_length=10_000)
    question_type: str = Field(default="text", pattern=_SLUG)
    options: list[Annotated[str, Field(max_length=1000, pattern=TEXT)]] = Field(default_factory=list, max_length=50)
    task_id: UUID | None = None


class QuestionAnswer(Body):
    answer: str = Field(pattern=TEXT, min_length=1, max_length=100_000)
    expected_version: ExpectedVersion = None


class QuestionOut(Question):
    pass


class QuestionList(BaseModel):
    questions: list[QuestionOut]
    next_cursor: str | None = next_cursor()


# --- chat ---------------------------------------------------------------------------------------------


class MessageCreate(Body):
    content: str = Field(pattern=TEXT, min_length=1, max_length=100_000)


class MessageOut(ChatMessage):
    pass


class MessageList(BaseModel):
    messages: list[MessageOut]
    next_cursor: str | None = next_cursor()


# --- users and tokens ---------------------------------------------------------------------------------


class UserCreate(Body):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Literal[Role.USER, Role.ADMIN] = Role.USER


class UserOut(User):
    pass


class UserList(BaseModel):
    users: list[UserOut]
    next_cursor: str | None = next_cursor()


class TokenCreate(Body):
    name: str = Field(pattern=TEXT, default="", max_length=100)
    # user: acts as its user; daemon: a supervisor host acting for its user; metrics: reads GET /metrics
    # only (issued to admin users).
    kind: Literal["user", "daemon", "metrics"] = "user"


class TokenOut(ApiToken):
    pass


class TokenIssued(TokenOut):
    token: str = Field(description="The secret. Shown once: store it now.")


class TokenList(BaseModel):
    tokens: list[TokenOut]
    next_cursor: str | None = next_cursor()


# --- health -------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    version: str
