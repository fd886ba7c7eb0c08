"""Contract types: the phases, deliverables and gates a contract can be created with. Admins add
their team's own types here, without a code change."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel

from makima.api.deps import DB, Caller
from makima.api.paging import Cursor, limit_query, next_cursor
from makima.api.routers._common import make_router
from makima.domain.contract_types import ContractTypeDefinition
from makima.errors import BadRequest
from makima.services import contract_types as svc

router = make_router("contract-types")
TypeName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class ContractTypeList(BaseModel):
    contract_types: list[ContractTypeDefinition]
    next_cursor: str | None = next_cursor()


@router.get("/contract-types", response_model=ContractTypeList)
def list_contract_types(
    db: DB, _: Caller, cursor: Cursor = None, limit: Annotated[int, limit_query(500)] = 100
) -> ContractTypeList:
    """By name, a page at a time."""
    page = svc.list_types(db, cursor=cursor, limit=limit)
    return ContractTypeList(contract_types=page.items, next_cursor=page.next_cursor)


@router.get("/contract-types/{name}", response_model=ContractTypeDefinition)
def get_contract_type(name: TypeName, db: DB, _: Caller) -> ContractTypeDefinition:
    return svc.get_type(db, name)


@router.put("/contract-types/{name}", response_model=ContractTypeDefinition)
def put_contract_type(name: TypeName, body: ContractTypeDefinition, db: DB, caller: Caller) -> ContractTypeDefinition:
    """Create or revise a custom type (admin). Gates may only name the phase's deliverables and
    registered validators; a revision raises ``version`` and keeps the phases contracts are in."""
    if body.name != name:
        raise BadRequest("the body's name must match the path", {"path": name, "body": body.name})
    return svc.put_type(db, caller, body)
