"""The records the service hands out. Built from database rows; serialised by the API as is."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from makima.domain.statuses import ContractStatus
from makima.domain.tasks import TaskStatus


class Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class Contract(Record):
    id: UUID
    owner_id: UUID
    name: str
    description: str
    contract_type: str
    phase: str
    status: ContractStatus
    version: int
    phase_guard: bool
    status_changed_at: datetime
    last_activity_at: datetime
    waiting_for: str | None
    blocked_reason: str | None
    failure_reason: str | None
    auto_complete_enabled: bool = True
    completion_detected_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class CompletedDeliverable(Record):
    phase: str
    deliverable_id: str
    completed_by: str
    completed_at: datetime


class Task(Record):
    id: UUID
    contract_id: UUID
    name: str
    status: TaskStatus
    is_supervisor: bool
    phase: str | None = None
    daemon: str | None
    daemon_id: UUID | None = None
    error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Question(Record):
    id: UUID
    contract_id: UUID
    task_id: UUID | None
    question: str
    question_type: str
    options: list[Any]
    status: str
    answer: str | None
    asked_by: str
    answered_by: str | None
    created_at: datetime
    answered_at: datetime | None
    delivered_at: datetime | None


class ChatMessage(Record):
    id: int
    contract_id: UUID
    role: str
    author: str
    content: str
    created_at: datetime


class ContractEvent(Record):
    id: int
    contract_id: UUID | None
    type: str
    payload: dict[str, Any]
    actor: str
    created_at: datetime


class User(Record):
    id: UUID
    name: str
    role: str
    created_at: datetime


class ApiToken(Record):
    id: UUID
    user_id: UUID
    name: str
    kind: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
