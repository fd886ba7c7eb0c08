"""One exception hierarchy carrying the seed's error codes.

Domain and data-access code raise these; the HTTP layer (``makima.api.errors``), the CLI and the
WebSocket monitor each map them to their own surface in exactly one place, so a code means the same
thing everywhere. ``details`` must be JSON-serialisable: it is sent to clients as is.
"""

from __future__ import annotations

from typing import Any


class MakimaError(Exception):
    """Base of every error a client may see. Subclasses fix ``code`` and ``status``."""

    code: str = "INTERNAL_ERROR"
    status: int = 500
    # Whole seconds after which a retry may succeed; the HTTP layer sends it as ``Retry-After``.
    retry_after: int | None = None

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


# --- The seed's error-code table -------------------------------------------------------------------


class ContractNotFound(MakimaError):
    code, status = "CONTRACT_NOT_FOUND", 404


class InvalidTransition(MakimaError):
    code, status = "INVALID_TRANSITION", 400


class VersionConflict(MakimaError):
    code, status = "VERSION_CONFLICT", 409


class PhaseGuardRequired(MakimaError):
    code, status = "PHASE_GUARD_REQUIRED", 409


class InvalidDeliverable(MakimaError):
    code, status = "INVALID_DELIVERABLE", 400


class SupervisorNotFound(MakimaError):
    code, status = "SUPERVISOR_NOT_FOUND", 404


class SupervisorDead(MakimaError):
    code, status = "SUPERVISOR_DEAD", 503


class ValidationFailed(MakimaError):
    code, status = "VALIDATION_FAILED", 400


# --- What users of an HTTP API expect besides -------------------------------------------------------


class InvalidRequest(MakimaError):
    """The request is well-formed JSON but its fields are wrong (pydantic validation)."""

    code, status = "INVALID_REQUEST", 422


class BadRequest(MakimaError):
    """The request cannot be parsed at all (malformed JSON, bad cursor, bad query value)."""

    code, status = "BAD_REQUEST", 400


class Unauthorized(MakimaError):
    code, status = "UNAUTHORIZED", 401


class Forbidden(MakimaError):
    code, status = "FORBIDDEN", 403


class NotFound(MakimaError):
    """A resource other than a contract (task, question, user, token, route) does not exist."""

    code, status = "NOT_FOUND", 404


class Conflict(MakimaError):
    """A uniqueness rule was broken (user name taken, ...)."""

    code, status = "CONFLICT", 409


class PayloadTooLarge(MakimaError):
    code, status = "PAYLOAD_TOO_LARGE", 413


class DatabaseUnavailable(MakimaError):
    """PostgreSQL cannot be reached. Transient: clients should retry with backoff."""

    code, status = "DATABASE_UNAVAILABLE", 503


class DatabaseTimeout(MakimaError):
    """A statement ran past the role's ``statement_timeout`` (or its transaction sat idle past
    ``idle_in_transaction_session_timeout``) and PostgreSQL cancelled it. The transaction was rolled
    back, so nothing changed; transient from the client's side (the load or a lock holder that made it
    slow usually passes): retry with backoff."""

    code, status = "DATABASE_TIMEOUT", 503


class RateLimited(MakimaError):
    """The calling token spent its request budget (``[rate_limits]``). Nothing was done; retry after
    ``retry_after`` seconds (sent as ``Retry-After``)."""

    code, status = "RATE_LIMITED", 429

    def __init__(self, message: str, *, retry_after: int, limit: dict[str, Any]) -> None:
        super().__init__(message, {"limit": limit, "retry_after": retry_after})
        self.retry_after = retry_after


class TooManyConnections(MakimaError):
    """The token already holds as many open monitor connections as ``[monitor]
    max_connections_per_token`` allows: close one (or use another token) first."""

    code, status = "TOO_MANY_CONNECTIONS", 429


class FeatureDisabled(MakimaError):
    """The feature behind this endpoint is switched off by its feature flag."""

    code, status = "FEATURE_DISABLED", 404


# --- Idempotency-Key (api/idempotency.py) -------------------------------------------------------------


class IdempotencyKeyReused(MakimaError):
    """The ``Idempotency-Key`` was used before, by this user on this route, with another request (other
    body, path or query). Nothing was done: a key names one request; send a new key for a new one."""

    code, status = "IDEMPOTENCY_KEY_REUSED", 422


class IdempotencyInProgress(MakimaError):
    """A request with this ``Idempotency-Key`` is still being processed. Nothing was done; retry after
    ``retry_after`` seconds: the retry gets the first request's answer once it is stored."""

    code, status = "IDEMPOTENCY_IN_PROGRESS", 409
    retry_after = 1
