"""Users, API tokens and turning a bearer token into a ``Principal``.

Tokens look like ``mkm_<43 url-safe chars>`` (256 random bits). Only their SHA-256 digest is stored;
the plaintext is shown once, when issued.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from makima.db import users as users_sql
from makima.db.connection import Conn, Database, transaction
from makima.domain import paging
from makima.domain.models import ApiToken, User
from makima.domain.paging import Page
from makima.domain.principals import Principal, Role
from makima.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from makima.services.common import require_admin
from makima.services.principal_cache import PrincipalCache

log = logging.getLogger("makima.auth")

TOKEN_PREFIX = "mkm_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# A token's kind decides its role, except a user token, which carries its user's. Listed, not defaulted:
# a kind this code does not know is refused rather than read as its owner's full role.
_KIND_ROLES = {"daemon": Role.DAEMON, "metrics": Role.METRICS}


def principal_from_row(row: dict[str, object]) -> Principal:
    kind = str(row["kind"])
    if kind == "user":
        role = Role(str(row["role"]))
    elif kind in _KIND_ROLES:
        role = _KIND_ROLES[kind]
    else:
        raise Unauthorized("invalid or revoked token")
    return Principal(user_id=UUID(str(row["user_id"])), role=role, token_id=UUID(str(row["token_id"])))


_MISSING = "missing bearer token: send Authorization: Bearer <token>"


def _principal_of(conn: Conn, digest: bytes) -> Principal:
    row = users_sql.resolve_token(conn, digest)
    if row is None:
        raise Unauthorized("invalid or revoked token")
    return principal_from_row(row)


def resolve_with(conn: Conn, token: str | None) -> Principal:
    if not token:
        raise Unauthorized(_MISSING)
    return _principal_of(conn, hash_token(token))


def resolve(db: Database, token: str | None, principals: PrincipalCache | None = None) -> Principal:
    """The principal of a token; ``Unauthorized`` when it is missing, unknown or revoked. With
    ``principals`` (the local stack's cache), a live token's principal is kept for its next requests."""
    if not token:
        raise Unauthorized(_MISSING)
    digest = hash_token(token)
    generation = principals.generation() if principals is not None else 0  # read before the SELECT
    with db.connection() as conn:
        principal = _principal_of(conn, digest)
    if principals is not None:
        principals.remember(digest, principal, generation)
    return principal


def cached(principals: PrincipalCache, token: str | None) -> Principal | None:
    """The cached principal of ``token`` (no round trip); None: ``resolve`` it."""
    return principals.lookup(hash_token(token)) if token else None


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header (None when absent or another scheme)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def create_user(db: Database, principal: Principal, *, name: str, role: Role) -> User:
    require_admin(principal)
    if role is Role.DAEMON:
        raise BadRequest("a user's role is user or admin; daemons are tokens of kind daemon")
    with transaction(db) as conn:
        row = users_sql.insert_user(conn, name=name, role=role.value)
        if row is None:
            raise Conflict(f"user name {name!r} is taken", {"name": name})
        return User.model_validate(row)


def list_users(db: Database, principal: Principal, *, cursor: str | None = None, limit: int = 100) -> Page[User]:
    """A page of the users, oldest first (admins only)."""
    require_admin(principal)
    after = paging.decode_cursor(cursor, (datetime, str)) if cursor else None
    with transaction(db) as conn:
        rows = users_sql.list_users(conn, after=(after[0], after[1]) if after else None, limit=limit + 1)
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["created_at"], r["name"])), User.model_validate)


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


def _issue(conn: Conn, user_id: UUID, name: str, kind: str, secret: str | None = None) -> IssuedToken:
    secret = secret or new_token()
    row = users_sql.insert_token(
        conn, user_id=user_id, name=name, kind=kind, token_hash=hash_token(secret), prefix=secret[:8]
    )
    return IssuedToken(ApiToken.model_validate(row), secret)


def issue_token(db: Database, principal: Principal, user_id: UUID, *, name: str, kind: str) -> IssuedToken:
    require_admin(principal)
    with transaction(db) as conn:
        user = users_sql.get_user(conn, user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found", {"user_id": str(user_id)})
        if kind == "metrics" and user["role"] != Role.ADMIN.value:
            # Its counts span every owner: only an admin's, so a user's own tokens never read them.
            raise ValidationFailed(
                "a metrics token is issued to an admin user only", {"user_id": str(user_id), "kind": kind}
            )
        return _issue(conn, user_id, name, kind)


def _refuse_daemon(principal: Principal, action: str) -> None:
    """Tokens are managed by people: a daemon token acts for its user on contracts, but a stolen one
    must not be able to list its user's tokens or revoke them (locking the user out). 403, not 404:
    the refusal is for the role, whatever the id, so it tells nothing about the id."""
    if principal.role is Role.DAEMON:
        raise Forbidden(f"a daemon token cannot {action}; a person (the user or an admin) can")


def list_tokens(
    db: Database, principal: Principal, user_id: UUID, *, cursor: str | None = None, limit: int = 100
) -> Page[ApiToken]:
    """Admins list anyone's tokens, a user their own (404 for another's); a daemon token none (403).
    A page, oldest first."""
    _refuse_daemon(principal, "list tokens")
    if not principal.is_admin and principal.user_id != user_id:
        raise NotFound(f"user {user_id} not found", {"user_id": str(user_id)})
    after = paging.decode_cursor(cursor, (datetime, UUID)) if cursor else None
    with transaction(db) as conn:
        if users_sql.get_user(conn, user_id) is None:
            raise NotFound(f"user {user_id} not found", {"user_id": str(user_id)})
        rows = users_sql.list_tokens(conn, user_id, after=(after[0], after[1]) if after else None, limit=limit + 1)
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["created_at"], r["id"])), ApiToken.model_validate)


def revoke_token(db: Database, principal: Principal, token_id: UUID) -> ApiToken:
    """Admins revoke any token; a user may revoke their own. Others see 404, not 403, so token ids
    cannot be probed. A daemon token may revoke only itself (a host retired for good); any other
    token id is 403 for it, existing or not."""
    if principal.role is Role.DAEMON and token_id != principal.token_id:
        _refuse_daemon(principal, "revoke other tokens")
    with transaction(db) as conn:
        owner = users_sql.token_owner(conn, token_id)
        if owner is None or (not principal.is_admin and owner != principal.user_id):
            raise NotFound(f"token {token_id} not found", {"token_id": str(token_id)})
        revoked = users_sql.revoke_token(conn, token_id)
        assert revoked is not None
        return ApiToken.model_validate(revoked)


class AdminTokenOutcome(StrEnum):
    """What registering a chosen admin token (``register_admin_token``) found."""

    REGISTERED = "registered"  # new: registered now
    KNOWN = "known"  # registered earlier and live
    REVOKED = "revoked"  # registered earlier and revoked since: left revoked


def _admin_user(conn: Conn, name: str) -> dict[str, Any]:
    user = users_sql.get_user_by_name(conn, name) or users_sql.insert_user(conn, name=name, role="admin")
    assert user is not None
    if user["role"] != "admin":
        raise Conflict(f"user {name!r} exists and is not an admin", {"name": name})
    return user


def register_admin_token(conn: Conn, *, name: str = "admin", token: str) -> AdminTokenOutcome:
    """Register ``token`` (a secret chosen by the operator: the stack's bootstrap secret, ``makima dev
    --admin-token``) for the admin ``name`` unless its digest is known already.

    A token that was revoked stays revoked: revoking a leaked bootstrap token is the standard response
    to a leak, and the deploy (or restart) that follows must neither undo it nor fail. That is logged as
    a warning naming the token by id, never by its secret; a second warning says when no live admin
    token is left. Nothing is minted in its place: a new secret in the bootstrap secret (or another
    ``--admin-token``) is registered at the next deploy (or start)."""
    user = _admin_user(conn, name)
    digest = hash_token(token)
    if users_sql.insert_token_if_new(
        conn, user_id=user["id"], name="bootstrap", kind="user", token_hash=digest, prefix=token[:8]
    ):
        return AdminTokenOutcome.REGISTERED
    known = users_sql.token_by_hash(conn, digest)
    assert known is not None  # the insert found it
    if known["revoked_at"] is None:
        return AdminTokenOutcome.KNOWN
    log.warning(
        "the configured admin token %s was revoked at %s: it stays revoked and is not registered again",
        known["id"],
        known["revoked_at"].isoformat(),
        extra={"token_id": str(known["id"]), "user_id": str(known["user_id"])},
    )
    if not users_sql.has_admin_token(conn):
        log.warning(
            "no live admin token is left: configure a new admin token (a new secret value, or another "
            "--admin-token) to administer this deployment"
        )
    return AdminTokenOutcome.REVOKED


def ensure_admin(conn: Conn, *, name: str = "admin", token: str | None = None) -> str | None:
    """Make sure an admin can log in. Returns a plaintext token only when one was created now:
    ``token`` (a caller-chosen secret, e.g. for scripts) is registered if it is not known yet and
    was never revoked (``register_admin_token``); with none, a token is minted only when no live admin
    token exists (the local stack prints it once; the deploy always passes its secret, so it never
    mints one into a log)."""
    if token is not None:
        registered = register_admin_token(conn, name=name, token=token) is AdminTokenOutcome.REGISTERED
        return token if registered else None
    user = _admin_user(conn, name)
    if users_sql.has_admin_token(conn):
        return None
    return _issue(conn, user["id"], "bootstrap", "user").secret
