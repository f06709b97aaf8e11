"""The MCP tool that asks before deploying: check_deploy_policy (would a deployment go
against a change freeze or a deployment policy?)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from trailmap.accounts import Principal
from trailmap.guardrails.guardrails import check_deployment
from trailmap.mcp.registry import read_only_tool, tool_result

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["register_guardrail_tools"]


def register_guardrail_tools(
    mcp: MCPServer, db: Database, begin: Callable[[Context], Awaitable[Principal]]
) -> None:
    @read_only_tool(mcp)
    async def check_deploy_policy(
        ctx: Context,
        service: Annotated[str, Field(description='e.g. "checkout"', max_length=200)],
        environment: Annotated[
            str | None,
            Field(description='e.g. "production"', max_length=200),
        ] = None,
        time: Annotated[
            str | None,
            Field(
                description="ISO 8601 with its zone; now when left out.",
                max_length=100,
            ),
        ] = None,
    ) -> CallToolResult:
        """Would deploying this service now (or at `time`) go against a change freeze or a
        deployment policy (blocked days, allowed hours, daily cap, cooldown, rollback rate,
        velocity)? Guardrails only warn; this tells before."""
        principal = await begin(ctx)
        check = await check_deployment(
            db, principal, service=service, environment=environment, time=time
        )
        data = check.as_json()
        where = f"{service} in {environment}" if environment else service
        if not check.violations:
            return tool_result(
                data,
                f"Clear: deploying {where} at {data['time']} goes against no freeze or policy.",
            )
        lines = [f"Deploying {where} at {data['time']} goes against {len(check.violations)}:"]
        lines += [f"- {v['kind']}: {v['message']}" for v in check.violations]
        return tool_result(data, "\n".join(lines))
