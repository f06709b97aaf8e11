"""Load: many concurrent clients ingest, query and call MCP tools against a real
`trailmap serve` (SQLite and PostgreSQL) and none gets a 5xx; latency percentiles per kind
are printed (docs/operations.md, "Load").

Fast form: 8 s per database; full form (scripts/reliability): 60 s.
Alone: `scripts/reliability tests/reliability/test_load.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import event, make_key, make_org
from tests.reliability.forms import FULL, scale
from tests.server import module_database, running_server
from trailmap.storage import Database, migrate

pytestmark = pytest.mark.anyio

CLIENTS = 16
DURATION_S = scale(6, 60)
EVENTS_PER_BATCH = 20
POINTS_PER_BATCH = 20
KINDS = (
    "POST /api/v1/events",
    "POST /api/v1/metrics",
    "GET /api/v1/events",
    "GET /api/v1/graph/nodes",
    "GET /api/v1/events/summary",
    "MCP query_events",
    "MCP get_event_summary",
)


@dataclass(frozen=True)
class Target:
    database: str
    url: str
    writer: str
    reader: str


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    accepted_events: int = 0
    mcp_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Target]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_load") as (
        url,
        directory,
    ):
        writer, reader = asyncio.run(_keys(url))
        with running_server(url, log_path=directory / "server.log") as base_url:
            yield Target(request.param, base_url, writer, reader)


async def _keys(url: str) -> tuple[str, str]:
    db = Database(url)
    try:
        migrate.upgrade(db)
        org = await make_org(db, slug="load")
        return await make_key(db, org, scope="read-write"), await make_key(
            db, org, scope="read-only"
        )
    finally:
        db.close()


async def test_mixed_load_from_many_clients_gets_no_server_error(target: Target) -> None:
    tally = Tally()
    deadline = time.monotonic() + DURATION_S
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=target.url, limits=limits, timeout=60) as http:
        await asyncio.gather(*(_client(n, target, http, tally, deadline) for n in range(CLIENTS)))
        elapsed = time.monotonic() - started
        scraped = (await http.get("/metrics")).text
        summary = await http.get(
            "/api/v1/events/summary",
            params={"from": "-1h"},
            headers={"Authorization": f"Bearer {target.reader}"},
        )

    _print_figures(target.database, tally, elapsed)
    assert tally.failures == [], tally.failures[:10]
    assert set(tally.latencies) == set(KINDS), "every kind of request ran"
    # Every acknowledged event is stored, and the server counted exactly what it acknowledged.
    assert summary.json()["data"]["total"] == tally.accepted_events
    samples = [s for f in text_string_to_metric_families(scraped) for s in f.samples]

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert total("trailmap_events_ingested_total", outcome="accepted") == tally.accepted_events
    for tool, calls in tally.mcp_calls.items():
        assert total("trailmap_mcp_tool_calls_total", tool=tool, outcome="ok") == calls
    assert total("trailmap_http_requests_total", status="500") == 0


async def _client(
    n: int, target: Target, http: httpx.AsyncClient, tally: Tally, deadline: float
) -> None:
    """One client: the kinds in turn, starting at its own, until the deadline."""
    writer = {"Authorization": f"Bearer {target.writer}"}
    reader = {"Authorization": f"Bearer {target.reader}"}
    batches = itertools.count()
    mcp_http = create_mcp_http_client(headers=reader)
    async with (
        mcp_http,
        Client(streamable_http_client(f"{target.url}/mcp", http_client=mcp_http)) as mcp,
    ):

        async def post_events() -> None:
            b = next(batches)
            batch = [
                event(id=f"load-{n}-{b}-{i}", source=f"//ci/load/svc-{i % 5}", time="NOW")
                for i in range(EVENTS_PER_BATCH)
            ]
            response = await http.post("/api/v1/events", json=batch, headers=writer)
            _check(response, tally)
            tally.accepted_events += response.json()["data"]["counts"]["accepted"]

        async def post_metrics() -> None:
            now = datetime.now(UTC).isoformat()
            points = [
                {"name": "latency_ms", "value": float(i), "time": now, "service": f"svc-{n}-{i}"}
                for i in range(POINTS_PER_BATCH)
            ]
            _check(await http.post("/api/v1/metrics", json=points, headers=writer), tally)

        async def get(path: str, params: dict[str, str]) -> None:
            _check(await http.get(path, params=params, headers=reader), tally)

        async def tool(name: str, arguments: dict[str, Any]) -> None:
            result = await mcp.call_tool(name, arguments)
            if result.is_error:
                tally.failures.append(f"MCP {name}: {result.content}")
            else:
                tally.mcp_calls[name] += 1

        calls: dict[str, Callable[[], Awaitable[None]]] = {
            KINDS[0]: post_events,
            KINDS[1]: post_metrics,
            KINDS[2]: lambda: get("/api/v1/events", {"from": "-1h", "limit": "50"}),
            KINDS[3]: lambda: get("/api/v1/graph/nodes", {"query": "svc"}),
            KINDS[4]: lambda: get("/api/v1/events/summary", {"from": "-1h"}),
            KINDS[5]: lambda: tool("query_events", {"from": "-1h", "limit": 20}),
            KINDS[6]: lambda: tool("get_event_summary", {"from": "-1h"}),
        }
        for i in itertools.count(n):
            if time.monotonic() >= deadline:
                return
            kind = KINDS[i % len(KINDS)]
            began = time.perf_counter()
            await calls[kind]()
            tally.latencies[kind].append(time.perf_counter() - began)


def _check(response: httpx.Response, tally: Tally) -> None:
    if response.status_code >= 400:
        tally.failures.append(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:200]}"
        )


def _print_figures(database: str, tally: Tally, elapsed: float) -> None:
    form = "full" if FULL else "fast"
    total = sum(len(v) for v in tally.latencies.values())
    print(
        f"\nload on {database} ({form}: {CLIENTS} clients, {elapsed:.0f} s): "
        f"{total} requests, {total / elapsed:.0f}/s, {tally.accepted_events} events stored"
    )
    print(f"  {'kind':<28} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind in KINDS:
        values = tally.latencies.get(kind, [])
        if len(values) < 2:
            print(f"  {kind:<28} {len(values):>6}")
            continue
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        p50, p95, p99 = (cuts[q - 1] * 1000 for q in (50, 95, 99))
        print(f"  {kind:<28} {len(values):>6} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f}")
