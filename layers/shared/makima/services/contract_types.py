"""Contract types as data: list them, and let an admin add or revise a team's own type."""

from __future__ import annotations

from makima.db import contract_types as types_sql
from makima.db.connection import Database, transaction
from makima.domain import paging
from makima.domain.contract_types import ContractTypeDefinition
from makima.domain.paging import Page
from makima.domain.principals import Principal
from makima.errors import Conflict, NotFound
from makima.services.common import require_admin


def list_types(db: Database, *, cursor: str | None = None, limit: int = 100) -> Page[ContractTypeDefinition]:
    """A page of the contract types, by name."""
    after = paging.decode_cursor(cursor, (str,))[0] if cursor else None
    with transaction(db) as conn:
        rows = types_sql.list_page(conn, after=after, limit=limit + 1)
    return paging.mapped(
        paging.page_of(rows, limit, lambda r: (r["name"],)),
        lambda r: ContractTypeDefinition.model_validate(r["definition"]),
    )


def get_type(db: Database, name: str) -> ContractTypeDefinition:
    with transaction(db) as conn:
        row = types_sql.get(conn, name)
    if row is None:
        raise NotFound(f"contract type {name!r} not found", {"contract_type": name})
    return ContractTypeDefinition.model_validate(row["definition"])


def put_type(db: Database, principal: Principal, definition: ContractTypeDefinition) -> ContractTypeDefinition:
    """Create or revise a custom type (admin only). Built-in types come from the package's files and are
    not edited here. A revision must raise the version and keep every phase a contract is in now, so
    no contract is left in a phase its type no longer has."""
    require_admin(principal)
    with transaction(db) as conn:
        existing = types_sql.lock(conn, definition.name)
        if existing is not None:
            if existing["builtin"]:
                raise Conflict(
                    f"{definition.name!r} is a built-in type; define your own under another name",
                    {"contract_type": definition.name},
                )
            if definition.version <= existing["version"]:
                raise Conflict(
                    f"version must be above the stored version {existing['version']}",
                    {"contract_type": definition.name, "stored_version": existing["version"]},
                )
            dropped = [p for p in types_sql.phases_in_use(conn, definition.name) if p not in definition.phase_ids]
            if dropped:
                raise Conflict(
                    f"contracts of type {definition.name!r} are in phases the new definition drops: {dropped}",
                    {"contract_type": definition.name, "phases_in_use": dropped},
                )
        row = types_sql.upsert(
            conn,
            name=definition.name,
            description=definition.description,
            version=definition.version,
            definition=definition.model_dump(mode="json"),
        )
        return ContractTypeDefinition.model_validate(row["definition"])
