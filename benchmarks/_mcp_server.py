"""Trailmap's app exactly as `trailmap serve` runs it, plus one tool that does nothing.

    python benchmarks/_mcp_server.py --database URL --port P

The `noop` tool is the floor of benchmarks/mcp.py: a tool call that goes through everything
a real one does (HTTP, the Origin check, the API key, JSON-RPC, the SDK's argument
validation and result serialisation) and then does no work. It exists only here, never in
the product, whose tool list is read by models and should hold nothing useless.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from trailmap.app import create_app
from trailmap.settings import Settings


async def noop() -> CallToolResult:
    """Does nothing; answers like a tool with one short line."""
    return CallToolResult(
        content=[TextContent(type="text", text="ok")], structured_content={"ok": True}
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings(database_url=args.database)
    app = create_app(settings)  # its lifespan closes the database it opens
    server = app.state.mcp_server
    assert isinstance(server, MCPServer)
    server.add_tool(noop, name="noop", annotations=ToolAnnotations(read_only_hint=True))
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level=settings.log_level, access_log=False
    )


if __name__ == "__main__":
    main()
