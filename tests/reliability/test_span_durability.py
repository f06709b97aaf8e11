"""The audit's hole 9: span statistics a trace export was acknowledged for survive a
`kill -9` of the server straight after (before, 40 exports answered 200 and, after the kill,
the graph counted 0 calls: they were being added up in memory)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.reliability.test_crash_durability import crash_database, serving
from tests.server import org_with_key
from trailmap import clock
from trailmap.storage import Database

__all__ = ["crash_database"]

_EXPORTS = 40
_SPANS = 10


def _attribute(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _export(n: int) -> bytes:
    """`_SPANS` database calls of checkout's, each proving its edge on its own."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(_attribute("service.name", "checkout"))
    scope = resource.scope_spans.add()
    now_ns = clock.now_us() * 1_000
    for i in range(_SPANS):
        span = scope.spans.add()
        span.trace_id = (n * 1_000 + i + 1).to_bytes(16, "big")
        span.span_id = (n * 1_000 + i + 1).to_bytes(8, "big")
        span.name = "SELECT orders"
        span.kind = Span.SpanKind.SPAN_KIND_CLIENT
        span.start_time_unix_nano = now_ns - 2_000_000
        span.end_time_unix_nano = now_ns
        span.attributes.extend(
            [_attribute("db.system.name", "postgresql"), _attribute("server.address", "db")]
        )
    encoded: bytes = request.SerializeToString()
    return encoded


def _calls(database_url: str) -> int:
    db = Database(database_url)
    try:
        total = db.read_sync(
            lambda conn: conn.exec_driver_sql(
                "SELECT coalesce(sum(calls), 0) FROM graph_minutes"
            ).scalar_one()
        )
    finally:
        db.close()
    return int(total)


def test_span_statistics_acknowledged_before_a_kill_9_are_counted_after_it(
    crash_database: str, tmp_path: Path
) -> None:
    key = org_with_key(crash_database, "spans")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}
    with serving(crash_database, tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for n in range(_EXPORTS):
                answer = client.post("/api/v1/otlp/v1/traces", content=_export(n), headers=headers)
                assert answer.status_code == 200, answer.text
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    # graph_minutes counts each call once, for its edge (checkout -> postgresql).
    assert _calls(crash_database) == _EXPORTS * _SPANS
