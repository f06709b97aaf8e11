"""The MCP face: the timeline's read-only tools for AI assistants, over HTTP and stdio."""

from trailmap.mcp.http import McpEndpoint
from trailmap.mcp.tools import build_mcp_server

__all__ = ["McpEndpoint", "build_mcp_server"]
