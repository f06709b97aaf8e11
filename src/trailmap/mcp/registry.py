"""How tools are registered: read-only, described in one line, answered with structured
content and a short text, and able to take the argument `from`, a Python keyword."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from trailmap.errors import TrailmapError

__all__ = [
    "READ_ONLY",
    "event_for_model",
    "from_argument",
    "read_only_tool",
    "refusing",
    "tool_result",
]

# destructiveHint is left out: it means something only when readOnlyHint is false.
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

_Fn = TypeVar("_Fn", bound=Callable[..., Awaitable[CallToolResult]])


def read_only_tool(mcp: MCPServer) -> Callable[[_Fn], _Fn]:
    """Register a read-only tool described by its docstring, as one line of prose: the
    docstring's line breaks and indentation would only cost the model tokens."""

    def register(fn: _Fn) -> _Fn:
        description = " ".join((fn.__doc__ or "").split())
        mcp.tool(description=description, annotations=READ_ONLY)(refusing(fn))
        return fn

    return register


def refusing(tool: _Fn) -> _Fn:
    """`tool`, its domain errors turned into tool errors: the one place where a refusal
    (a bad argument, a quota, nothing found) becomes the text the model reads."""

    @functools.wraps(tool)
    async def answering(*args: Any, **kwargs: Any) -> CallToolResult:
        try:
            return await tool(*args, **kwargs)
        except TrailmapError as error:
            raise ToolError(error.message) from None

    return cast("_Fn", answering)


# What a model needs no copy of: `specversion` is "1.0" on every event, `event_id` repeats
# `id`, and `trailmap_id` names nothing that `id` (with `source`) does not; they would only
# take room in its context.
_NOT_FOR_MODEL = frozenset({"specversion", "event_id", "trailmap_id"})


def event_for_model(event: dict[str, Any]) -> dict[str, Any]:
    """An event as a model reads it: without the attributes in `_NOT_FOR_MODEL`, and its
    guardrail violations as kind and message (the message names the rule and its window)."""
    out = {k: v for k, v in event.items() if k not in _NOT_FOR_MODEL}
    if violations := out.get("violations"):
        out["violations"] = [{"kind": v["kind"], "message": v["message"]} for v in violations]
    return out


def tool_result(structured: dict[str, Any], text: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured
    )


def from_argument(
    tool: Callable[..., Awaitable[CallToolResult]],
) -> Callable[..., Awaitable[CallToolResult]]:
    """Let a tool take the argument `from`, a Python keyword.

    The parameter is `from_` with the alias `from`: the SDK builds the schema from the
    signature (which `wraps` keeps) and passes arguments by their alias, renamed here.
    """

    @functools.wraps(tool)
    async def with_from(**arguments: Any) -> CallToolResult:
        if "from" in arguments:
            arguments["from_"] = arguments.pop("from")
        return await tool(**arguments)

    return with_from
