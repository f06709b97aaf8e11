"""OTLP trace ingestion over HTTP against its floor: decoding the same requests alone.

    .venv/bin/python benchmarks/otlp.py [--backend sqlite|postgres|both] [--requests N]
                                        [--concurrency C] [--repeat R] [--quick]

The figure: N protobuf requests of 512 spans each (what an SDK's batch processor sends),
posted to a real `trailmap serve` process from C keep-alive connections at once, timed from
the first send to the last answer; an answer means the graph, the statistics and the waiting
halves are committed. The floor: the same request bodies parsed into
`ExportTraceServiceRequest` (the OpenTelemetry project's generated class, upb) one after the
other in this process: the least any receiver must do. Spans per second of each, the best of
R runs (default 3).

The spans are a shop's traces: each service's spans in its own requests (as SDKs export
them), so every call between services is paired across requests; a third of the spans are
INTERNAL, and the rest carry the attributes instrumentations set (HTTP, database, messaging).

Target: the HTTP rate is at least 25% of the floor; exits 1 when it is missed. `--quick`
(20 requests, one run) is a sanity check that never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
from _common import (
    Backend,
    bench_database,
    create_org_with_key,
    rss_kib,
    run_backends,
    start_server,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

SPANS_PER_REQUEST = 512
TARGET = 0.25
_INTERNAL, _SERVER, _CLIENT = 1, 2, 3

# (service, callee service or None, what the client span carries)
_CALLS = (
    ("frontend", "checkout", {"http.request.method": "POST", "server.address": "checkout"}),
    ("checkout", "payments", {"http.request.method": "POST", "server.address": "payments"}),
    ("checkout", "orders", {"http.request.method": "POST", "server.address": "orders"}),
    ("orders", None, {"db.system.name": "postgresql", "server.address": "orders-db"}),
    ("checkout", None, {"db.system.name": "redis", "server.address": "cache"}),
    ("payments", None, {"url.full": "https://api.stripe.com/v1/charges"}),
)


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(
    rng: random.Random,
    trace_id: bytes,
    parent: bytes,
    kind: int,
    start_ns: int,
    attrs: dict[str, str | int],
    *,
    error: bool = False,
) -> Span:
    duration = int(rng.lognormvariate(16, 0.6))
    return Span(
        trace_id=trace_id,
        span_id=rng.randbytes(8),
        parent_span_id=parent,
        name="operation",
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration,
        attributes=[_kv(k, v) for k, v in attrs.items()],
        status=Status(code=2 if error else 0),  # type: ignore[arg-type]
    )


def make_requests(count: int, *, seed: int = 7) -> list[bytes]:
    """`count` requests of exactly 512 spans, each holding one service's spans."""
    rng = random.Random(seed)
    by_service: dict[str, list[Span]] = defaultdict(list)
    now_ns = time.time_ns() - 600 * 10**9
    total = 0
    while total < count * SPANS_PER_REQUEST:
        trace_id = rng.randbytes(16)
        start = now_ns + rng.randrange(300 * 10**9)
        root = _span(
            rng,
            trace_id,
            b"",
            _SERVER,
            start,
            {"http.route": "/", "http.response.status_code": 200},
        )
        by_service["frontend"].append(root)
        servers = {"frontend": root.span_id}
        for caller, callee, attrs in _CALLS:
            parent = servers.get(caller, root.span_id)
            client = _span(
                rng, trace_id, parent, _CLIENT, start, {**attrs, "http.response.status_code": 200}
            )
            by_service[caller].append(client)
            by_service[caller].append(
                _span(rng, trace_id, client.span_id, _INTERNAL, start, {"code.function": "handle"})
            )
            if callee:
                server = _span(
                    rng,
                    trace_id,
                    client.span_id,
                    _SERVER,
                    start,
                    {"http.route": "/x", "http.response.status_code": 200},
                    error=rng.random() < 0.01,
                )
                by_service[callee].append(server)
                by_service[callee].append(
                    _span(
                        rng, trace_id, server.span_id, _INTERNAL, start, {"code.function": "work"}
                    )
                )
                servers[callee] = server.span_id
            total = sum(len(v) for v in by_service.values())
    bodies: list[bytes] = []
    for service, spans in sorted(by_service.items()):
        resource = [
            _kv("service.name", service),
            _kv("service.version", "1.0.0"),
            _kv("deployment.environment.name", "production"),
            _kv("telemetry.sdk.language", "python"),
        ]
        for i in range(0, len(spans) - SPANS_PER_REQUEST + 1, SPANS_PER_REQUEST):
            request = ExportTraceServiceRequest()
            rs: ResourceSpans = request.resource_spans.add()
            rs.resource.attributes.extend(resource)
            rs.scope_spans.add().spans.extend(spans[i : i + SPANS_PER_REQUEST])
            bodies.append(request.SerializeToString())
    rng.shuffle(bodies)
    return bodies[:count]


def floor(bodies: list[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        ExportTraceServiceRequest().ParseFromString(body)
    return time.perf_counter() - started


async def _send_all(base_url: str, token: str, bodies: list[bytes], concurrency: int) -> float:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/x-protobuf"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=120
    ) as client:
        warm = await asyncio.gather(*(client.get("/readyz") for _ in range(concurrency)))
        for response in warm:
            response.raise_for_status()
        pending = iter(bodies)
        failures: list[str] = []

        async def worker() -> None:
            for body in pending:
                response = await client.post("/api/v1/otlp/v1/traces", content=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {failures[0]}")
    return elapsed


def run_backend(
    backend: Backend, bodies: list[bytes], concurrency: int, repeat: int, tmp: Path
) -> bool:
    spans = len(bodies) * SPANS_PER_REQUEST
    http_runs: list[float] = []
    floor_runs: list[float] = []
    memory: dict[str, int] = {}
    for _ in range(repeat):
        floor_runs.append(floor(bodies))
        with bench_database(backend, "otlp", tmp) as db:
            _org, token = create_org_with_key(db.url, "bench")
            with start_server(db.url, tmp) as server:
                http_runs.append(
                    asyncio.run(_send_all(server.base_url, token, bodies, concurrency))
                )
                memory = rss_kib(server.pid)
    http_rate, floor_rate = spans / min(http_runs), spans / min(floor_runs)
    ratio = http_rate / floor_rate
    verdict = "OK" if ratio >= TARGET else "MISSED"
    print(
        f"{backend:<8} OTLP ingest: {http_rate:>10,.0f} spans/s   floor (protobuf decode): "
        f"{floor_rate:>10,.0f} spans/s   ratio {ratio:.3f}  (target >= {TARGET:.2f}) {verdict}",
        flush=True,
    )
    print(
        f"{'':<8} {spans:,} spans in {len(bodies)} requests of {SPANS_PER_REQUEST}, "
        f"{concurrency} connections, best of {repeat}; server RSS after "
        f"{memory.get('VmRSS', 0) / 1024:.0f} MiB",
        flush=True,
    )
    return ratio >= TARGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--requests", type=int, default=200, help="requests (default 200)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (20 requests)")
    args = parser.parse_args(argv)
    count = 20 if args.quick else args.requests
    repeat = 1 if args.quick else max(1, args.repeat)
    bodies = make_requests(count)
    return run_backends(
        "otlp",
        args.backend,
        lambda backend, tmp: run_backend(backend, bodies, args.concurrency, repeat, tmp),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
