"""Contract types: the phases, deliverables and gates a contract can be created with. Admins add
their team's own types here, without a code change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Path
from pydantic import BaseModel, ValidationError

from makima.api.deps import DB, Caller
from makima.api.paging import Cursor, limit_query, next_cursor
from makima.api.routers._common import make_router, raises
from makima.domain.contract_types import ContractTypeDefinition
from makima.errors import Conflict, Inconsistent, InvalidDefinition, NotFound
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


@router.get("/contract-types/{name}", response_model=ContractTypeDefinition, responses=raises(NotFound))
def get_contract_type(name: TypeName, db: DB, _: Caller) -> ContractTypeDefinition:
    return svc.get_type(db, name)


@router.put(
    "/contract-types/{name}",
    response_model=ContractTypeDefinition,
    responses=raises(Conflict, Inconsistent, InvalidDefinition),
    # The body is read as JSON and validated here (below), against the same model the document shows.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ContractTypeDefinition"}}},
        }
    },
)
def put_contract_type(
    name: TypeName, body: Annotated[dict[str, Any], Body()], db: DB, caller: Caller
) -> ContractTypeDefinition:
    """Create or revise a custom type (admin). Gates may only name the phase's deliverables and
    registered validators; a revision raises ``version`` and keeps the phases contracts are in.

    Validated here rather than by FastAPI so that a definition whose parts do not fit together is
    ``InvalidDefinition`` (422 ``INVALID_REQUEST``, declared as a refusal the schema cannot foresee)."""
    try:
        definition = ContractTypeDefinition.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        where = ".".join(errors[0]["loc"][1:]) or "body"
        raise InvalidDefinition(f"{where}: {errors[0]['msg']}", {"errors": errors}) from None
    if definition.name != name:
        raise Inconsistent("the body's name must match the path", {"path": name, "body": definition.name})
    return svc.put_type(db, caller, definition)
