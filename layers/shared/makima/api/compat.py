"""The status as old clients know it (seed: backwards compatibility).

A client that knows only the original three statuses sends ``X-Makima-Status: legacy``; every endpoint
that returns contracts then answers ``status`` folded onto ``active``/``completed``/``archived`` (the
enhanced value stays available as ``enhanced_status``), and the list's ``status`` filter reads those
three names as the groups they stand for. While the ``enhanced_contract_status`` flag is off every
client gets the legacy view: the feature is off, so no new status value leaves the API.

The view is chosen once per request by a router dependency and kept in a context variable, so that
``ContractOut.of`` (used by every router that returns a contract, whoever owns it) applies it without
each call site passing it along. Sync endpoints run in the threadpool with a copy of the request's
context, so the value set by the dependency is the one they see; each request has its own.
"""

from __future__ import annotations

from contextvars import ContextVar
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import Depends, Header

from makima.api.deps import FeatureFlags
from makima.domain.statuses import LEGACY_STATUS, ContractStatus
from makima.flags import Flag

HEADER = "X-Makima-Status"


class StatusView(StrEnum):
    ENHANCED = "enhanced"
    LEGACY = "legacy"


_VIEW: ContextVar[StatusView] = ContextVar("makima_status_view", default=StatusView.ENHANCED)


def current_view() -> StatusView:
    """The view of the request being served (enhanced outside a request)."""
    return _VIEW.get()


async def choose_view(
    flags: FeatureFlags,
    # Not ``| None``: the document would then allow a null, which a header cannot carry.
    x_makima_status: Annotated[
        Literal["legacy", "enhanced"],
        Header(
            alias=HEADER,
            description="legacy: answer `status` with the original three values (the full one is `enhanced_status`).",
        ),
    ] = "enhanced",
) -> StatusView:
    view = (
        StatusView.LEGACY
        if x_makima_status == "legacy" or not flags.enabled(Flag.ENHANCED_CONTRACT_STATUS)
        else StatusView.ENHANCED
    )
    _VIEW.set(view)
    return view


View = Annotated[StatusView, Depends(choose_view)]
STATUS_VIEW = Depends(choose_view)


def shown(status: str | None) -> str | None:
    """A status value (as a row holds it) the way this request shows statuses."""
    if status is None or current_view() is StatusView.ENHANCED:
        return status
    return LEGACY_STATUS[ContractStatus(status)].value
