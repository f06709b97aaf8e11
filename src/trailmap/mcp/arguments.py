"""Tool arguments that Python cannot spell as parameters."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.types import CallToolResult

__all__ = ["from_argument"]


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
