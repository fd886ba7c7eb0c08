"""Who is calling: resolved from a bearer token by the authorizer (AWS) or the API itself (local)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"
    # A daemon acts for the user who owns its token: it sees that user's contracts and nothing else,
    # and cannot do what only a person may (answer questions, manage tokens).
    DAEMON = "daemon"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: UUID
    role: Role
    token_id: UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def actor(self) -> str:
        """How this caller is named in event rows."""
        return f"{self.role.value}:{self.user_id}"
