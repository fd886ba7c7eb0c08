"""``build_server``: makima's MCP server, its tools and resources over one ``Access`` to the API.

The same server serves both transports: stdio (``makima mcp``, one client under the process's token) and
streamable HTTP (``http.py``, each request under its own bearer token). It is the SDK's ``MCPServer``:
the tools' input schemas come from their typed signatures (pydantic), so an argument of the wrong type
or out of range is refused by the SDK as a tool error before any API call.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from makima import __version__
from makima.mcp_server import resources, tools
from makima.mcp_server.access import Access

NAME = "makima"
INSTRUCTIONS = """\
makima keeps track of contracts: units of AI-agent work that move through phases (the contract's type
sets the phases and each phase's deliverables). Each contract has an owner (a person) and one supervisor
(an agent). Every tool acts under your token: a supervisor (daemon) token works the owner's contracts but
cannot answer questions or force phases; the owner's token can do everything on their contracts.

As a supervisor: get_contract_context, then start_supervisor once (or restore_supervisor after a restart);
record work with spawn_task / start_task / complete_task, mark_deliverable when a deliverable is produced,
ask_owner when you need a decision (wait_for_answer to keep waiting), heartbeat regularly, save_state at
save points. A phase advances by itself when its requirements are met; request_phase_change asks for it.

The phase guard: a contract with phase_guard on never changes phase (or completes) without its owner's
confirmation. The supervisor's request returns 'owner_confirmation_required'; the owner confirms with
confirm_phase_change.

As an owner: create_contract, list_contracts (waiting=true shows what needs you), show_contract,
answer_question, confirm_phase_change, pause_contract / resume_contract.

Resources: makima://contracts/{contract_id} (the contract's context) and
makima://contracts/{contract_id}/events (its newest events)."""


def build_server(access: Access) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        NAME,
        title="makima contracts",
        description="Contract management for AI-agent supervisors: contracts, phases, deliverables, tasks, "
        "questions to the owner, heartbeats and restoration.",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",
    )
    tools.register(server, access)
    resources.register(server, access)
    return server
