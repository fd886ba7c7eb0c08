"""What the ``contracts`` commands accept as contract ids and statuses, checked before any request
(a bad value is a usage error), the same way in every command."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated
from uuid import UUID

import typer

from makima.domain.monitor import MAX_CONTRACT_IDS
from makima.domain.statuses import ContractStatus


class TextFormat(StrEnum):
    """``--format`` of the commands that print one thing: text for people, json for scripts."""

    text = "text"
    json = "json"


STATUSES: tuple[str, ...] = tuple(s.value for s in ContractStatus)

# The contract's version an action was decided on (`show` prints it): the API refuses the action with
# VERSION_CONFLICT (exit 1), changing nothing, when the contract has changed since.
ExpectedVersion = Annotated[
    int | None,
    typer.Option(
        "--expected-version",
        min=1,
        max=2_147_483_647,
        metavar="VERSION",
        help="Act only if the contract is still at this version (see `show`): "
        "otherwise VERSION_CONFLICT, nothing changed.",
    ),
]
_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,35}$")


def parse_statuses(values: Iterable[str]) -> tuple[str, ...]:
    """Statuses from ``--status`` values (each a comma list); ValueError names an unknown one."""
    out: list[str] = []
    for value in values:
        for raw in value.split(","):
            status = raw.strip().lower()
            if not status:
                continue
            if status not in STATUSES:
                raise ValueError(f"unknown status {raw.strip()!r}; one of: {', '.join(STATUSES)}")
            if status not in out:
                out.append(status)
    if not out:
        raise ValueError("no status given")
    return tuple(out)


def parse_contract_ids(values: Iterable[str]) -> tuple[str, ...]:
    """Contract ids as given: full UUIDs in canonical form, prefixes (4+ hex characters, as the other
    ``contracts`` commands take) lower-cased, for the command to resolve; ValueError names a malformed one."""
    out: list[str] = []
    for value in values:
        given = value.strip()
        try:
            canonical = str(UUID(given))
        except ValueError:
            if not _ID_PREFIX.match(given):
                raise ValueError(f"not a contract id (a UUID, or a prefix of 4+ hex characters): {value!r}") from None
            canonical = given.lower()
        if canonical not in out:
            out.append(canonical)
    if len(out) > MAX_CONTRACT_IDS:
        raise ValueError(f"at most {MAX_CONTRACT_IDS} contract ids")
    return tuple(out)


def is_full_id(contract_id: str) -> bool:
    try:
        return str(UUID(contract_id)) == contract_id
    except ValueError:
        return False
