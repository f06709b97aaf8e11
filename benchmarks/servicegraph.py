"""The graph at volume: the Collector's servicegraph connector's exports, against their floor.

    .venv/bin/python benchmarks/servicegraph.py [--backend sqlite|postgres|both]
                                                [--edges E] [--exports N] [--quick]

When the Collector pairs the spans itself (docs/opentelemetry.md), Trailmap's work follows
the number of edges, not the number of spans: every `metrics_flush_interval` (60 s by
default) each Collector sends one export holding, per edge and `failed` value, the running
totals of `traces_service_graph_request_total`, `..._request_failed_total` and the client
and server latency histograms. This sends N such exports of E edges (default 1,000 edges
between 200 services, 2 of the 4 series per edge with failed calls), one minute apart, as
protobuf to a real `trailmap serve` process (default settings) over one keep-alive
connection, and times each from send to answer: by then the totals' differences are
stored as per-minute statistics and the cursors moved.

The floor: the same bodies parsed into `ExportMetricsServiceRequest` (upb) in this
process. Printed: milliseconds per export, data points per second, the ratio to the floor,
and what it means for one app node taking one export at a time: how many Collectors of E
edges it keeps up with at one export a minute. There is no target: the figure says how far
the connector path scales.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from _common import (
    Backend,
    bench_database,
    create_org_with_key,
    percentile,
    read_http_response,
    run_backends,
    start_server,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_BOUNDS_S = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15)
_MINUTE_NS = 60 * 10**9


def _kv(key: str, value: str | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


@dataclass
class _Total:
    """One series' running total: calls, their latencies' sum and histogram."""

    count: int = 0
    sum_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS_S) + 1))


def make_exports(edges: int, exports: int, *, seed: int = 11) -> list[bytes]:
    """`exports` connector exports, a minute apart and ending now, of `edges` edges."""
    rng = random.Random(seed)
    services = [f"svc-{i:03d}" for i in range(max(2, edges // 5))]
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < edges:
        client, server = rng.sample(services, 2)
        pairs.add((client, server))
    series = []
    for client, server in sorted(pairs):
        for failed in (False, True):
            labels = [
                _kv("client", client),
                _kv("server", server),
                _kv("connection_type", ""),
                _kv("failed", failed),
                _kv("client_deployment.environment.name", "production"),
                _kv("server_deployment.environment.name", "production"),
            ]
            series.append((labels, 0.02 if failed else 0.98))
    now_ns = time.time_ns()
    start_ns = now_ns - (exports + 1) * _MINUTE_NS
    totals = [_Total() for _ in series]
    bodies = []
    for n in range(exports):
        at_ns = now_ns - (exports - 1 - n) * _MINUTE_NS
        request = ExportMetricsServiceRequest()
        scope = request.resource_metrics.add().scope_metrics.add()
        scope.scope.name = "traces_service_graph"
        total = scope.metrics.add(name="traces_service_graph_request_total")
        failed_total = scope.metrics.add(name="traces_service_graph_request_failed_total")
        for metric in (total, failed_total):
            metric.sum.aggregation_temporality = _CUMULATIVE
            metric.sum.is_monotonic = True
        latencies = [
            scope.metrics.add(name=f"traces_service_graph_request_{side}", unit="s")
            for side in ("client", "server")
        ]
        for metric in latencies:
            metric.histogram.aggregation_temporality = _CUMULATIVE
        for (labels, share), running in zip(series, totals, strict=True):
            calls = rng.randrange(1, 200) if share > 0.5 else rng.randrange(0, 5)
            for _ in range(calls):
                seconds = rng.lognormvariate(-3.5, 0.8)
                running.count += 1
                running.sum_s += seconds
                running.buckets[sum(1 for bound in _BOUNDS_S if bound < seconds)] += 1
            count, sum_s, buckets = running.count, running.sum_s, running.buckets
            times = {"start_time_unix_nano": start_ns, "time_unix_nano": at_ns}
            total.sum.data_points.add(attributes=labels, as_int=count, **times)
            if share < 0.5:
                failed_total.sum.data_points.add(attributes=labels, as_int=count, **times)
            for metric in latencies:
                metric.histogram.data_points.add(
                    attributes=labels,
                    count=count,
                    sum=sum_s,
                    bucket_counts=buckets,
                    explicit_bounds=_BOUNDS_S,
                    **times,
                )
        bodies.append(request.SerializeToString())
    return bodies


def data_points(body: bytes) -> int:
    request = ExportMetricsServiceRequest.FromString(body)
    metrics = request.resource_metrics[0].scope_metrics[0].metrics
    return sum(len(getattr(m, m.WhichOneof("data")).data_points) for m in metrics)


def floor(bodies: list[bytes]) -> float:
    """Seconds to parse every body, the least of three passes."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for body in bodies:
            ExportMetricsServiceRequest().ParseFromString(body)
        best = min(best, time.perf_counter() - started)
    return best


async def _post_all(base_url: str, token: str, bodies: list[bytes]) -> list[float]:
    """Seconds from send to answer of each export, one after another on one connection."""
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    timings = []
    try:
        for body in bodies:
            head = (
                "POST /api/v1/otlp/v1/metrics HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/x-protobuf\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            started = time.perf_counter()
            writer.write(head.encode() + body)
            status, answer = await read_http_response(reader)
            timings.append(time.perf_counter() - started)
            if status != 200 or answer:
                raise RuntimeError(f"{status}: {answer[:300]!r}")  # or refused data points
    finally:
        writer.close()
    return timings


def run_backend(backend: Backend, bodies: list[bytes], edges: int, tmp: Path) -> bool:
    points = data_points(bodies[0])
    with bench_database(backend, "servicegraph", tmp) as db:
        _org, token = create_org_with_key(db.url, "bench")
        with start_server(db.url, tmp) as server:
            timings = asyncio.run(_post_all(server.base_url, token, bodies))
    # The first export of a series only starts its count: the rest are the steady state.
    steady = timings[1:] or timings
    typical = percentile(steady, 0.5)
    parse = floor(bodies) / len(bodies)
    print(
        f"{backend:<8} servicegraph export of {edges:,} edges ({points:,} data points): "
        f"{typical * 1000:,.1f} ms (median of {len(steady)}; first {timings[0] * 1000:,.1f} ms, "
        f"slowest {max(steady) * 1000:,.1f} ms), {points / typical:,.0f} data points/s; "
        f"floor (protobuf decode) {parse * 1000:.2f} ms, ratio {parse / typical:.3f}",
        flush=True,
    )
    print(
        f"{'':<8} at one export a minute, one app node taking one export at a time keeps "
        f"up with about {60 / typical:,.0f} such Collectors",
        flush=True,
    )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--edges", type=int, default=1000)
    parser.add_argument("--exports", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (100 edges)")
    args = parser.parse_args(argv)
    edges = 100 if args.quick else args.edges
    exports = 3 if args.quick else max(2, args.exports)
    bodies = make_exports(edges, exports)
    return run_backends(
        "servicegraph",
        args.backend,
        lambda backend, tmp: run_backend(backend, bodies, edges, tmp),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
