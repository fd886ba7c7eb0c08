"""POST /mcp (GET and DELETE answer 405): makima's MCP server over streamable HTTP, behind the authorizer."""

from makima.lambda_support.mcp import make_mcp_handler

handler = make_mcp_handler()
