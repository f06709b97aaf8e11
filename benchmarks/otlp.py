"""OTLP trace ingestion over HTTP against its floor: decoding the same requests alone.

    .venv/bin/python benchmarks/otlp.py [--backend sqlite|postgres|both] [--requests N]
                                        [--concurrency C] [--repeat R] [--quick]

The figure: N protobuf requests of 512 spans each (what an SDK's batch processor sends),
posted to a real `trailmap serve` process (default settings) from C keep-alive connections
at once, timed from the first send until everything they gave the server to do is stored:
the last answer (by then the nodes, edges and versions they prove are committed), plus
what the server then does to store what it kept in memory (per-minute statistics still
being added up, span halves still waiting for their partner). That last part is measured
as the server's graceful stop (SIGTERM, which stores all of it) minus the stop of a server
that ingested nothing. What the figure leaves out, as before: the sweep that, 30 seconds
on, turns the stored lone CLIENT spans into edges to external APIs.

The floor: the same request bodies parsed into `ExportTraceServiceRequest` (the
OpenTelemetry project's generated class, upb) one after the other in this process: the
least any receiver must do. Spans per second of each, the best of R runs (default 3).

The client is a few lines of asyncio writing prepared requests: it shares the machine's
CPUs with the server, and an httpx client would take about as much CPU per request as the
server's whole ingestion.

The spans are a shop's traces: each service's spans in its own requests (as SDKs export
them), so every call between services is paired across requests; a third of the spans are
INTERNAL, and the rest carry the attributes instrumentations set (HTTP, database, messaging).
One call in six (to a payments API) never gets a SERVER span: its CLIENT half is stored.

Target: the HTTP rate is at least 25% of the floor; exits 1 when it is missed. `--quick`
(20 requests, one run) is a sanity check that never fails on a figure.

`--ceiling` also posts the same requests to the least receiver this stack allows
(benchmarks/_bare_otlp_receiver.py: uvicorn, parse the body, answer; no key, no storage)
and prints its share of the floor: what no ingestion on this stack can exceed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from _common import (
    Backend,
    Server,
    bench_database,
    create_org_with_key,
    read_http_response,
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


@dataclass
class _Run:
    answered_s: float  # first send to last answer
    stopped_s: float  # last answer to the server's exit after SIGTERM (a graceful stop)
    rss_mib: float


async def _send_all(base_url: str, token: str, bodies: list[bytes], concurrency: int) -> float:
    """POST every body from `concurrency` keep-alive connections at once; seconds from the
    first send to the last answer. The requests are built beforehand and the answers read
    with a few lines of asyncio: the load generator shares the machine's CPUs with the server
    and should take as little of them as it can (an httpx client costs about as much CPU per
    request as the server's whole ingestion)."""
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    head = (
        "POST /api/v1/otlp/v1/traces HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/x-protobuf\r\n"
        "Content-Length: {length}\r\n\r\n"
    )
    requests = [head.replace("{length}", str(len(body))).encode() + body for body in bodies]
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    failures: list[str] = []
    try:
        for reader, writer in connections:
            writer.write(f"GET /readyz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            status, _ = await read_http_response(reader)
            if status != 200:
                raise RuntimeError(f"/readyz answered {status}")
        pending = iter(requests)

        async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for request in pending:
                writer.write(request)
                status, body = await read_http_response(reader)
                if status != 200:
                    failures.append(f"{status}: {body[:300].decode(errors='replace')}")

        started = time.perf_counter()
        await asyncio.gather(*(worker(reader, writer) for reader, writer in connections))
        elapsed = time.perf_counter() - started
    finally:
        for _, writer in connections:
            writer.close()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {failures[0]}")
    return elapsed


def _stop(server: Server) -> float:
    """SIGTERM, and seconds until the process is gone: uvicorn finishes its requests, then
    the app's lifespan stores every span half still waiting in memory."""
    started = time.perf_counter()
    server.process.terminate()
    server.process.wait(timeout=120)
    return time.perf_counter() - started


def _one_run(backend: Backend, bodies: list[bytes], concurrency: int, tmp: Path) -> _Run:
    with bench_database(backend, "otlp", tmp) as db:
        _org, token = create_org_with_key(db.url, "bench")
        with start_server(db.url, tmp) as server:
            answered = asyncio.run(_send_all(server.base_url, token, bodies, concurrency))
            rss = rss_kib(server.pid).get("VmRSS", 0) / 1024
            stopped = _stop(server)
    return _Run(answered, stopped, rss)


def _idle_stop(backend: Backend, tmp: Path) -> float:
    """How long a server that ingested nothing takes to stop: the part of a stop that is
    not storing halves (uvicorn's shutdown, the interpreter's exit)."""
    with bench_database(backend, "otlp_idle", tmp) as db, start_server(db.url, tmp) as server:
        return _stop(server)


_BARE_RECEIVER = Path(__file__).resolve().parent / "_bare_otlp_receiver.py"


def ceiling(bodies: list[bytes], concurrency: int, repeat: int, tmp: Path) -> float:
    """Spans per second answered by the bare receiver, the best of `repeat` runs."""
    best = math.inf
    for _ in range(repeat):
        with start_server("unused://", tmp, launcher=_BARE_RECEIVER) as server:
            best = min(best, asyncio.run(_send_all(server.base_url, "-", bodies, concurrency)))
    return len(bodies) * SPANS_PER_REQUEST / best


def run_backend(
    backend: Backend,
    bodies: list[bytes],
    concurrency: int,
    repeat: int,
    tmp: Path,
    *,
    with_ceiling: bool = False,
) -> bool:
    spans = len(bodies) * SPANS_PER_REQUEST
    runs: list[_Run] = []
    floor_runs: list[float] = []
    idle_stops: list[float] = []
    for _ in range(repeat):
        floor_runs.append(floor(bodies))
        # Two idle stops a run, the fastest counted: the stop's own noise then shortens
        # the idle stop, which lengthens what is charged to the figure, not the reverse.
        idle_stops += [_idle_stop(backend, tmp), _idle_stop(backend, tmp)]
        runs.append(_one_run(backend, bodies, concurrency, tmp))
    idle_stop = min(idle_stops)
    # The figure counts the work the requests leave behind: what the server still kept in
    # memory at the last answer is stored at the stop (in a longer run, every second or so).
    best = min(runs, key=lambda run: run.answered_s + max(0.0, run.stopped_s - idle_stop))
    left_behind = max(0.0, best.stopped_s - idle_stop)
    end_to_end = best.answered_s + left_behind
    rate, floor_rate = spans / end_to_end, spans / min(floor_runs)
    ratio = rate / floor_rate
    verdict = "OK" if ratio >= TARGET else "MISSED"
    print(
        f"{backend:<8} OTLP ingest: {rate:>10,.0f} spans/s   floor (protobuf decode): "
        f"{floor_rate:>10,.0f} spans/s   ratio {ratio:.3f}  (target >= {TARGET:.2f}) {verdict}",
        flush=True,
    )
    print(
        f"{'':<8} {spans:,} spans in {len(bodies)} requests of {SPANS_PER_REQUEST}, "
        f"{concurrency} connections, best of {repeat}: answered in {best.answered_s * 1000:,.0f}"
        f" ms ({spans / best.answered_s:,.0f} spans/s), then {left_behind * 1000:,.0f} ms "
        f"storing what it kept in memory (stop {best.stopped_s * 1000:,.0f} ms, idle stop "
        f"{idle_stop * 1000:,.0f} ms); server RSS {best.rss_mib:.0f} MiB",
        flush=True,
    )
    if with_ceiling:
        bare = ceiling(bodies, concurrency, repeat, tmp)
        print(
            f"{'':<8} ceiling: a bare receiver (uvicorn, parse, answer; no key, no storage) "
            f"{bare:,.0f} spans/s, ratio {bare / floor_rate:.3f}",
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
    parser.add_argument(
        "--ceiling", action="store_true", help="also time a bare receiver that only parses"
    )
    args = parser.parse_args(argv)
    count = 20 if args.quick else args.requests
    repeat = 1 if args.quick else max(1, args.repeat)
    bodies = make_requests(count)
    return run_backends(
        "otlp",
        args.backend,
        lambda backend, tmp: run_backend(
            backend, bodies, args.concurrency, repeat, tmp, with_ceiling=args.ceiling
        ),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
