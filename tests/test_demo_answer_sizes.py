"""Small answers: every tool, called on the demo organization with the arguments an assistant
typically sends, answers within 2,000 tokens, and the tool list stays under 5,000 tokens.

Tokens are estimated without a tokenizer, conservatively: ceil(len(text) / 3), where text is
the compact JSON the client receives (for a call, the result with its text content and its
structured content; for the list, every tool as listed). The tokenizers assistants use
average about four characters of English or JSON per token, so three characters per token
overestimates, and an answer that passes here is smaller still in a model's context.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import TextContent
from pydantic import BaseModel

pytestmark = pytest.mark.anyio

ANSWER_TOKENS = 2_000
LIST_TOKENS = 5_000

# Each tool with the calls an assistant makes for the seed questions and the server's prompts;
# "<deployment>" is the id of checkout's last deployment.
TYPICAL: dict[str, list[dict[str, Any]]] = {
    "get_organization_context": [{}],
    "query_events": [{}, {"from": "-7d"}, {"from": "today", "type": ["deployment"]}],
    "get_event": [{"id": "<deployment>"}],
    "get_event_summary": [{}, {"from": "-7d"}],
    "list_event_types": [{}],
    "list_event_sources": [{}],
    "list_event_subjects": [{}],
    "search_nodes": [
        {},
        {"query": "checkout"},
        {"query": "", "kinds": ["database", "cache", "queue", "topic", "external_api"]},
    ],
    "get_node": [{"node": "checkout"}, {"node": "postgresql"}, {"node": "api-gateway"}],
    "traverse_dependencies": [
        {"node": "api-gateway"},
        {"node": "api-gateway", "direction": "both", "max_depth": 4},
    ],
    "find_path": [{"from": "api gateway", "to": "postgres"}],
    "get_impact": [{"node": "payments"}, {"node": "postgresql"}],
    "rank_critical_services": [{}, {"by": "pagerank", "limit": 10}],
    "get_metrics_around_event": [{"event_id": "<deployment>"}],
    "find_changes_near": [{"node": "checkout"}, {"node": "checkout", "from": "-6h"}],
    "get_graph_changes": [{}, {"from": "-7d"}],
    "compare_declared_and_observed": [{}, {"service": "checkout"}],
    "get_dora_metrics": [{}, {"from": "-90d"}],
    "check_deploy_policy": [{"service": "checkout", "environment": "production"}],
}


def tokens(model: BaseModel) -> int:
    text = json.dumps(
        model.model_dump(by_alias=True, exclude_none=True, mode="json"), separators=(",", ":")
    )
    return math.ceil(len(text) / 3)


async def test_the_tool_list_stays_under_five_thousand_tokens(
    demo_server: tuple[str, str],
) -> None:
    async with _client(demo_server) as client:
        listed = await client.list_tools()
    assert len(listed.tools) == len(TYPICAL)
    print(f"\ntool list: {tokens(listed)} tokens")
    assert tokens(listed) < LIST_TOKENS


async def test_every_tool_answers_the_demo_within_two_thousand_tokens(
    demo_server: tuple[str, str],
) -> None:
    sizes: dict[str, int] = {}
    async with _client(demo_server) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        # No tool is left out, and none is measured that the server does not list.
        assert listed == set(TYPICAL)
        found = await client.call_tool(
            "query_events", {"type": ["deployment"], "service": ["checkout"], "limit": 1}
        )
        assert found.structured_content is not None
        deployment = found.structured_content["events"][0]["id"]
        for tool, calls in TYPICAL.items():
            for args in calls:
                sent = {k: deployment if v == "<deployment>" else v for k, v in args.items()}
                result = await client.call_tool(tool, sent)
                assert not result.is_error, (tool, sent, result.content)
                sizes[f"{tool}({json.dumps(args)})"] = tokens(result)
    print("\n".join(f"{n:>6} {call}" for call, n in sorted(sizes.items(), key=lambda s: -s[1])))
    too_large = {call: n for call, n in sizes.items() if n > ANSWER_TOKENS}
    assert not too_large, too_large


@asynccontextmanager
async def _client(server: tuple[str, str]) -> AsyncIterator[Client]:
    base, key = server
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        yield client


async def test_a_list_cut_short_says_how_many_more_and_how_to_get_them(
    demo_server: tuple[str, str],
) -> None:
    async with _client(demo_server) as client:
        everything = await client.call_tool("list_event_sources", {"limit": 100})
        first = await client.call_tool("list_event_sources", {"limit": 3})
        context = await client.call_tool("get_organization_context", {})
    assert everything.structured_content is not None
    assert first.structured_content is not None
    assert context.structured_content is not None
    sources = everything.structured_content["sources"]
    assert "more" not in everything.structured_content
    # The demo's repositories (the traces' own reports of a deployment CI also reported are
    # the same changes, and no source of their own).
    assert len(sources) > 3
    cut = first.structured_content
    assert cut["sources"] == sources[:3]
    assert (cut["more"], cut["next"]) == (len(sources) - 3, f"call again with limit={len(sources)}")
    (text,) = first.content
    assert isinstance(text, TextContent)
    assert text.text.endswith(f"\n{len(sources) - 3} more: call again with limit={len(sources)}.")
    # The organization's context names the ten most frequent, with their counts.
    named = context.structured_content
    assert named["sources"] == [{"value": s["value"], "count": s["count"]} for s in sources[:10]]
    assert named.get("sources_more", 0) == max(0, len(sources) - 10)
