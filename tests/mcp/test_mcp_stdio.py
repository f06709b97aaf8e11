"""`trailmap mcp --stdio`: the same tools, for the organization of TRAILMAP_API_KEY."""

from __future__ import annotations

import os
import sys

import pytest
from mcp import Client, StdioServerParameters

from tests.factories import event, make_key, make_org, principal_for
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

pytestmark = pytest.mark.anyio


async def test_the_stdio_server_answers_for_the_keys_organization(
    db: Database, database_url: str
) -> None:
    org, other = await make_org(db), await make_org(db)
    token = await make_key(db, org, scope="read-only")
    await ingest_events(db, principal_for(org), [event(id="mine")], max_event_bytes=10240)
    await ingest_events(db, principal_for(other), [event(id="theirs")], max_event_bytes=10240)
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "trailmap.cli.main", "--database", database_url, "mcp", "--stdio"],
        env={**os.environ, "TRAILMAP_API_KEY": token},
    )
    async with Client(server) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("query_events", {"from": "-1h"})
    assert "get_organization_context" in tools
    assert [e["id"] for e in result.structured_content["events"]] == ["mine"]
