"""Tool calls with arguments a tool does not take are refused, naming them, where the SDK would
silently drop them (docs/internals.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent

__all__ = ["RefuseUnknownArguments"]


class RefuseUnknownArguments:
    """`ServerMiddleware` for `tools/call`; other requests pass untouched."""

    def __init__(self, mcp: MCPServer) -> None:
        self._mcp = mcp
        self._taken: dict[str, tuple[str, ...]] | None = None

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        params = ctx.params
        if ctx.method == "tools/call" and params is not None:
            name, arguments = params.get("name"), params.get("arguments")
            taken = (await self._arguments()).get(name) if isinstance(name, str) else None
            if taken is not None and isinstance(arguments, Mapping):
                unknown = sorted(str(a) for a in arguments if a not in taken)
                if unknown:
                    return _refusal(str(name), unknown, taken)
        return await call_next(ctx)

    async def _arguments(self) -> dict[str, tuple[str, ...]]:
        # Tools are all registered before the server answers its first request.
        if self._taken is None:
            self._taken = {
                tool.name: tuple(tool.input_schema.get("properties", {}))
                for tool in await self._mcp.list_tools()
            }
        return self._taken


def _refusal(tool: str, unknown: list[str], taken: tuple[str, ...]) -> CallToolResult:
    names = ", ".join(repr(a[:50]) for a in unknown[:5])
    plural = "s" if len(unknown) > 1 else ""
    text = (
        f"{tool} takes no argument{plural} {names}; its arguments are: {', '.join(taken)}."
        " Nothing was done: call it again with those."
    )
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
