"""GET /contract-types: the types a contract can be created with, their phases and deliverables."""

from __future__ import annotations

from pydantic import BaseModel

from makima.api.deps import DB, Caller
from makima.api.routers._common import make_router
from makima.db import contract_types as types_sql
from makima.db.connection import transaction
from makima.domain.contract_types import ContractTypeDefinition

router = make_router("contract-types")


class ContractTypeList(BaseModel):
    contract_types: list[ContractTypeDefinition]


@router.get("/contract-types", response_model=ContractTypeList)
def list_contract_types(db: DB, _: Caller) -> ContractTypeList:
    with transaction(db) as conn:
        rows = types_sql.list_all(conn)
    return ContractTypeList(contract_types=[ContractTypeDefinition.model_validate(r["definition"]) for r in rows])
