"""An MCP `query_events` call against the floor of the protocol stack: a no-op tool call.

    .venv/bin/python benchmarks/mcp.py [--backend sqlite|postgres|both] [--events N]
                                       [--orgs K] [--calls C] [--quick]

Setup (not measured): N events (default 1,000,000) over K organizations (default 20) and the
last seven days, loaded straight through the driver as benchmarks/query.py does; then
Trailmap's app, as `trailmap serve` runs it, with one extra tool, `noop`, that does nothing
(benchmarks/_mcp_server.py). One official `mcp` SDK client per organization's key, each
connected once (as an assistant stays connected), calls over real HTTP, one at a time.

Measured, C times each and interleaved, rotating over the organizations:

- `query_events(from="-24h")`: the newest 25 of the organization's last day, rendered with
  times in the zone, relative forms and the text answer, as an assistant asks it;
- `noop()`: the same round trip (HTTP, Origin check, API key, JSON-RPC, the SDK's argument
  validation and result serialisation) with no work: the floor.

Target: p50(query_events) <= 1.5 x p50(noop); exits 1 when it is missed. `--quick` (100,000
events, 100 calls) checks that the benchmark works and never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

# This script is called mcp.py, and Python puts its folder first on sys.path: `import mcp`
# would import the script itself. The SDK is imported with the folder off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

sys.path.insert(0, str(_HERE))
from _common import (  # noqa: E402
    Backend,
    bench_database,
    create_org_with_key,
    percentile,
    rss_kib,
    run_backends,
    start_server,
)
from query import generate_rows, load_postgres, load_sqlite  # noqa: E402

TARGET_RATIO = 1.5
_LAUNCHER = _HERE / "_mcp_server.py"
_QUERY = {
    "from": "-24h",
    "limit": 25,
}  # the page the figures in docs/performance.md were measured with


async def _connect(stack: AsyncExitStack, base_url: str, token: str) -> Client:
    http = await stack.enter_async_context(
        create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    )
    transport = streamable_http_client(f"{base_url}/mcp", http_client=http)
    return await stack.enter_async_context(Client(transport))


async def _timed(client: Client, tool: str, args: dict[str, Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await client.call_tool(tool, args)
    elapsed = (time.perf_counter() - started) * 1000
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return elapsed, result.structured_content


async def measure(base_url: str, tokens: list[str], calls: int) -> tuple[list[float], list[float]]:
    query_ms: list[float] = []
    noop_ms: list[float] = []
    async with AsyncExitStack() as stack:
        clients = [await _connect(stack, base_url, token) for token in tokens]
        for i in range(len(clients) * 3 + 30):  # warm: connections, caches, last-used marks
            await _timed(clients[i % len(clients)], "query_events", _QUERY)
            await _timed(clients[i % len(clients)], "noop", {})
        for i in range(calls):
            client = clients[i % len(clients)]
            elapsed, answer = await _timed(client, "query_events", _QUERY)
            if len(answer["events"]) != 25:
                raise RuntimeError(f"expected a page of 25 events: {len(answer['events'])}")
            query_ms.append(elapsed)
            elapsed, _ = await _timed(client, "noop", {})
            noop_ms.append(elapsed)
    return query_ms, noop_ms


def run_backend(backend: Backend, count: int, orgs: int, calls: int, directory: Path) -> bool:
    with bench_database(backend, "mcp", directory) as db:
        keys = [create_org_with_key(db.url, f"org-{n:02d}") for n in range(orgs)]
        started = time.perf_counter()
        rows = generate_rows(count, [org_id for org_id, _ in keys], time.time_ns() // 1000)
        (load_sqlite if backend == "sqlite" else load_postgres)(db, rows)
        load_s = time.perf_counter() - started
        with start_server(db.url, directory, launcher=_LAUNCHER) as server:
            query_ms, noop_ms = asyncio.run(
                measure(server.base_url, [token for _org, token in keys], calls)
            )
            memory = rss_kib(server.pid)

    q50, q99 = percentile(query_ms, 50), percentile(query_ms, 99)
    n50, n99 = percentile(noop_ms, 50), percentile(noop_ms, 99)
    ratio = q50 / n50
    met = ratio <= TARGET_RATIO
    print(
        f"{backend:<8} {count:,} events over {orgs} orgs (loaded in {load_s:.0f} s); "
        f"{calls} calls each, official mcp SDK client over HTTP",
        flush=True,
    )
    for label, p50, p99 in (
        ('query_events(from="-24h"): 25 events', q50, q99),
        ("noop(): the protocol stack's floor", n50, n99),
    ):
        print(f"{'':<8} {label:<40} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    print(
        f"{'':<8} target p50(query_events) <= {TARGET_RATIO} x p50(noop): "
        f"{ratio:.2f} x  {'OK' if met else 'MISSED'}"
    )
    print(
        f"{'':<8} server RSS after the load and the calls: {memory['VmRSS'] / 1024:.0f} MiB "
        f"(peak {memory['VmHWM'] / 1024:.0f} MiB)",
        flush=True,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--events", type=int, default=1_000_000, help="default 1,000,000")
    parser.add_argument("--orgs", type=int, default=20, help="organizations (default 20)")
    parser.add_argument("--calls", type=int, default=300, help="of each kind (default 300)")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (100,000 events)")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else args.events
    calls = 100 if args.quick else args.calls
    return run_backends(
        "mcp",
        args.backend,
        lambda backend, tmp: run_backend(backend, count, args.orgs, calls, tmp),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
