"""Counting MCP tool calls by tool and outcome, for the server's own /metrics."""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer

from trailmap.telemetry import ServerTelemetry

__all__ = ["tool_call_counter"]


def tool_call_counter(telemetry: ServerTelemetry, server: MCPServer[Any]) -> ServerMiddleware[Any]:
    """An MCP SDK middleware counting `tools/call` by tool: only the server's own tool names
    become labels, whatever name a client sends."""
    known: set[str] = set()

    async def count(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        if not known:
            known.update(tool.name for tool in await server.list_tools())
        name = (ctx.params or {}).get("name")
        tool = name if isinstance(name, str) and name in known else "unknown"
        outcome = "error"
        try:
            result = await call_next(ctx)
            outcome = "error" if _is_error(result) else "ok"
            return result
        finally:
            telemetry.mcp_tool_calls.labels(tool, outcome).inc()

    return count


def _is_error(result: HandlerResult) -> bool:
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))
