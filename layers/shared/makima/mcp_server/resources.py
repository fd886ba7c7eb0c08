"""The MCP resources: a contract's context an agent (or its host) can read without a tool call.

- ``makima://contracts/{contract_id}``: what ``get_contract_context`` returns (the contract, its current
  phase's deliverables and readiness, the unanswered questions);
- ``makima://contracts/{contract_id}/events``: the newest events of the contract's log (at most
  ``EVENTS_SHOWN``), oldest first, with ``last_id`` to read on from (the API's
  ``…/events?after_id=``).

Both are read under the caller's token, like the tools; an API error is an MCP error whose message
starts with the API's code. They are templates (a contract id fills them), so they are listed by
``resources/templates/list``, not ``resources/list``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from makima.client.api import MakimaApi
from makima.mcp_server.access import JSON, Access
from makima.mcp_server.tools import context_of

EVENTS_SHOWN = 50
# The API's page limit of the event log.
EVENTS_PAGE = 1000


def _contract_id(value: str) -> str:
    """The id a URI carries, checked before any request: the API would refuse it too, but a URI is text
    from the client and deserves a clear word."""
    try:
        return str(UUID(value))
    except ValueError:
        raise ResourceError(f"INVALID_REQUEST: {value!r} is not a contract id (a UUID)") from None


def recent_events(api: MakimaApi, cid: str, shown: int = EVENTS_SHOWN) -> JSON:
    """The last ``shown`` events: the log read forward page by page, keeping the newest."""
    events: list[JSON] = []
    after: int | None = None
    while True:
        page = api.events(cid, after_id=after, limit=EVENTS_PAGE)
        events = (events + list(page["events"]))[-shown:]
        last = page.get("last_id")
        if len(page["events"]) < EVENTS_PAGE or last is None:
            return {"contract_id": cid, "events": events, "last_id": last}
        after = int(last)


def register(server: MCPServer[Any], access: Access) -> None:
    @server.resource(
        "makima://contracts/{contract_id}",
        name="contract",
        description="A contract's summary: status, phase, the current phase's deliverables (done or not), "
        "readiness (what is missing before the phase can advance) and the unanswered questions.",
        mime_type="application/json",
    )
    async def contract(contract_id: str, ctx: Context) -> str:
        cid = _contract_id(contract_id)
        return await access.resource(ctx, lambda api: context_of(api, cid))

    @server.resource(
        "makima://contracts/{contract_id}/events",
        name="contract-events",
        description=f"The newest {EVENTS_SHOWN} events of a contract's log, oldest first (phase changes, "
        "deliverables, tasks, questions and answers, status changes), with last_id.",
        mime_type="application/json",
    )
    async def events(contract_id: str, ctx: Context) -> str:
        cid = _contract_id(contract_id)
        return await access.resource(ctx, lambda api: recent_events(api, cid))
