"""makima as an MCP server (issue 18): the tools a supervisor agent and a contract owner need, and the
contract's summary and events as resources, each a thin call of the HTTP API under the caller's token.

- ``access``: which token a call runs under (the process's own on stdio, the request's bearer over
  HTTP), the SDK's ``MakimaApi`` built for it, and API errors turned into MCP tool errors.
- ``tools``: the tools, with descriptions written for a model; ``waits``: the bounded, resumable wait
  for an owner's answer.
- ``resources``: ``makima://contracts/{id}`` and ``makima://contracts/{id}/events``.
- ``server``: ``build_server``, the MCP server with all of them.
- ``http``: the streamable-HTTP endpoint the local stack mounts at ``/mcp``, every request
  authenticated by its bearer token.

The package is not named ``mcp``: that would shadow the SDK it is built on.
"""
