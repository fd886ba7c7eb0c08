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
    # True when a request that matches the OpenAPI schema may still get this error because the refusal
    # depends on what no request schema can say: the resource's current state, stored data (the contract
    # types there are), the clock, or two fields that must agree. The document lists these codes per
    # response (``x-refused-beyond-schema``) so a client, and the fuzzer, can tell them from input errors.
    beyond_schema: bool = False
    # True when the error is about an id the request body names, not about the URL's resource (a 404
    # for a task a question refers to): listed per response as ``x-about-the-body``.
    about_body: bool = False

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
    beyond_schema = True


class VersionConflict(MakimaError):
    code, status = "VERSION_CONFLICT", 409


class PhaseGuardRequired(MakimaError):
    code, status = "PHASE_GUARD_REQUIRED", 409


class InvalidDeliverable(MakimaError):
    code, status = "INVALID_DELIVERABLE", 400
    beyond_schema = True


class SupervisorNotFound(MakimaError):
    code, status = "SUPERVISOR_NOT_FOUND", 404


class SupervisorDead(MakimaError):
    code, status = "SUPERVISOR_DEAD", 503


class ValidationFailed(MakimaError):
    code, status = "VALIDATION_FAILED", 400
    beyond_schema = True


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


class InvalidCursor(BadRequest):
    """A paging cursor this server did not hand out (or one it can no longer read): opaque to the
    schema, so a well-formed string can still be refused."""

    beyond_schema = True


class Inconsistent(BadRequest):
    """Values that must agree, with each other or with what is stored, do not (a path id and the
    body's; an offset past the stored conversation): the code of any bad request, but no schema can
    state the rule."""

    beyond_schema = True


class OutOfBounds(InvalidRequest):
    """A value within the schema's bounds that the stored state puts out of bounds (a save's ``seq``
    jumping too far above the last accepted one), or free-form JSON past bounds a schema cannot state
    (depth, size, NUL): the code of any invalid request, but no schema can predict it."""

    beyond_schema = True


class StaleTimestamp(InvalidRequest):
    """A timestamp too far from the server's clock (a heartbeat's): well-formed, refused by the clock."""

    beyond_schema = True


class InvalidDefinition(InvalidRequest):
    """A contract type whose parts do not fit together (a gate naming a deliverable its phase lacks, a
    validator nobody registered, ids used twice): the same 422 as any invalid body, but rules between
    fields and against the registry, which the schema does not carry."""

    beyond_schema = True


class UnknownSupervisorTask(SupervisorNotFound):
    """A heartbeat whose body names a task that is not the contract's live supervisor (or a contract with
    none): the seed's 404 ``SUPERVISOR_NOT_FOUND``, about an id in the body as much as the URL's."""

    about_body = True


class UnknownReference(NotFound):
    """The body names a task or a daemon that does not exist or is another owner's. The URL's resource
    exists; the answer is still the 404 ``NOT_FOUND`` a missing one gets, so that another tenant's ids
    cannot be told from unknown ones (docs/security.md)."""

    about_body = True


class Conflict(MakimaError):
    """A uniqueness rule was broken (user name taken, ...)."""

    code, status = "CONFLICT", 409


class PayloadTooLarge(MakimaError):
    """The body is over ``max_body_bytes``: a limit on bytes, which no schema states (a list of items
    each within its own length can still add up past it)."""

    code, status = "PAYLOAD_TOO_LARGE", 413
    beyond_schema = True


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
    beyond_schema = True  # any schema-valid request may come with a key already used for another


class IdempotencyInProgress(MakimaError):
    """A request with this ``Idempotency-Key`` is still being processed. Nothing was done; retry after
    ``retry_after`` seconds: the retry gets the first request's answer once it is stored."""

    code, status = "IDEMPOTENCY_IN_PROGRESS", 409
    retry_after = 1
