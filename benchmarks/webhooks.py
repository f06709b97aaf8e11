"""GitHub webhook deliveries against the same events posted to /api/v1/events, one per request.

    .venv/bin/python benchmarks/webhooks.py [--backend sqlite|postgres|both] [--deliveries N]
                                            [--concurrency C] [--repeat R] [--quick]

The figure: N `deployment_status` deliveries (the upstream sample payload, each with its own
delivery id, deployment id and today's times), signed with the integration's secret as GitHub
signs them and posted to a real `trailmap serve` process from C keep-alive connections; each
goes through the signature check, the mapping (ingest/github.py), the timeline's ingestion
and the delivery's record. The comparison: the very events the mapping makes of the same
deliveries, posted one per request to /api/v1/events with a READ_WRITE key. The two alternate
R times (default 3), each on a fresh database, and the best of each is kept.

Target: deliveries per second at least half the events' rate; exits 1 when it is missed.
`--quick` (300 deliveries, one run) is a sanity check that never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import hmac
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from _common import (
    Backend,
    bench_database,
    create_org_with_key,
    machine_summary,
    require_trailmap,
    start_server,
    temporary_directory,
)

from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.ingest.deliveries import MAPPERS
from trailmap.ingest.webhooks import ForgeContext
from trailmap.integrations.integrations import create_integration, webhook_path
from trailmap.storage import Database

TARGET = 0.5
_SECRET_KEY = "benchmark-server-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway server's
_SAMPLE = (
    Path(__file__).resolve().parent.parent
    / "tests/fixtures/upstream/github-webhooks/deployment_status.created.success.json"
)


def make_deliveries(count: int, run: str) -> list[tuple[str, bytes]]:
    """(delivery id, body): the upstream sample, each a deployment of its own, made now."""
    sample = orjson.loads(_SAMPLE.read_bytes())
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        payload = copy.deepcopy(sample)
        payload["deployment"]["id"] = 10_000_000 + i
        payload["deployment_status"]["id"] = 20_000_000 + i
        for part in ("deployment", "deployment_status"):
            payload[part]["created_at"] = payload[part]["updated_at"] = now
        out.append((f"{run}-{i:06d}", orjson.dumps(payload)))
    return out


def mapped_events(deliveries: list[tuple[str, bytes]]) -> list[bytes]:
    """The events the GitHub mapping makes of each delivery, as /api/v1/events bodies."""
    mapper = MAPPERS.get("github")
    if mapper is None:
        sys.exit("no GitHub mapping (ingest/github.py) is registered in ingest/deliveries.py")
    bodies = []
    for delivery_id, body in deliveries:
        mapped = mapper("deployment_status", orjson.loads(body), ForgeContext(delivery_id))
        if len(mapped.events) != 1:
            sys.exit(f"the sample made {len(mapped.events)} events, not 1: {mapped.ignored}")
        bodies.append(orjson.dumps(mapped.events[0]))
    return bodies


def _integration(url: str, org_slug: str) -> tuple[str, str]:
    async def _create() -> tuple[str, str]:
        handle = Database(url)
        try:
            from trailmap.accounts import get_org  # noqa: PLC0415

            org = await get_org(handle, org_slug)
            made, secret = await create_integration(
                handle,
                org.id,
                who=OPERATOR_AUTHORITY,
                by=OPERATOR,
                kind="github",
                name="benchmark",
                secret_key=_SECRET_KEY,
            )
            return webhook_path(made.id), secret
        finally:
            handle.close()

    return asyncio.run(_create())


async def _post_all(
    base_url: str, requests: list[tuple[str, bytes, dict[str, str]]], concurrency: int, ok: int
) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120.0) as client:
        warm = await asyncio.gather(*(client.get("/healthz") for _ in range(concurrency)))
        for response in warm:
            response.raise_for_status()
        pending = iter(requests)
        failures: list[str] = []

        async def worker() -> None:
            for path, body, headers in pending:
                response = await client.post(path, content=body, headers=headers)
                if response.status_code != ok:
                    failures.append(f"{response.status_code}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {failures[0]}")
    return elapsed


def _webhooks_once(
    backend: Backend, deliveries: list[tuple[str, bytes]], concurrency: int, tmp: Path
) -> float:
    with bench_database(backend, "webhooks", tmp) as db:
        create_org_with_key(db.url, "bench")
        path, secret = _integration(db.url, "bench")
        requests = []
        for delivery_id, body in deliveries:
            signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers = {
                "content-type": "application/json",
                "x-github-event": "deployment_status",
                "x-github-delivery": delivery_id,
                "x-hub-signature-256": signature,
            }
            requests.append((path, body, headers))
        with start_server(db.url, tmp) as server:
            return asyncio.run(_post_all(server.base_url, requests, concurrency, 200))


def _events_once(backend: Backend, bodies: list[bytes], concurrency: int, tmp: Path) -> float:
    with bench_database(backend, "events", tmp) as db:
        _org_id, token = create_org_with_key(db.url, "bench")
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        requests = [("/api/v1/events", body, headers) for body in bodies]
        with start_server(db.url, tmp) as server:
            return asyncio.run(_post_all(server.base_url, requests, concurrency, 201))


def run_backend(backend: Backend, count: int, concurrency: int, repeat: int, tmp: Path) -> bool:
    hook_runs: list[float] = []
    event_runs: list[float] = []
    for attempt in range(repeat):
        deliveries = make_deliveries(count, f"{backend}-{attempt}-{int(time.time())}")
        bodies = mapped_events(deliveries)
        hook_runs.append(_webhooks_once(backend, deliveries, concurrency, tmp))
        event_runs.append(_events_once(backend, bodies, concurrency, tmp))
    hook_rate = count / min(hook_runs)
    event_rate = count / min(event_runs)
    ratio = hook_rate / event_rate
    verdict = "OK" if ratio >= TARGET else "MISSED"
    print(
        f"{backend:<8} webhooks: {hook_rate:>7,.0f} deliveries/s   /api/v1/events: "
        f"{event_rate:>7,.0f} events/s   ratio {ratio:.2f}  (target >= {TARGET:.2f}) {verdict}",
        flush=True,
    )
    print(
        f"{'':<8} {count:,} deliveries, one per request, {concurrency} connections; best of "
        f"{repeat} for each side",
        flush=True,
    )
    return ratio >= TARGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--deliveries", type=int, default=3000, help="default 3,000")
    parser.add_argument("--concurrency", type=int, default=4, help="client connections (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (300 deliveries)")
    args = parser.parse_args(argv)
    count = 300 if args.quick else max(1, args.deliveries)
    repeat = 1 if args.quick else max(1, args.repeat)
    require_trailmap()
    # The server encrypts and opens the integration's secret with this key.
    os.environ["TRAILMAP_SECRET_KEY"] = _SECRET_KEY
    print(machine_summary(), flush=True)
    passed = True
    with temporary_directory() as tmp:
        backends: list[Backend] = (
            ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
        )
        for backend in backends:
            passed = run_backend(backend, count, args.concurrency, repeat, Path(tmp)) and passed
    if args.quick:
        print("webhooks: quick sanity run; the target is judged on a full run only")
        return 0
    print("webhooks: every target met" if passed else "webhooks: FAIL, the target was missed")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
