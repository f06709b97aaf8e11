"""`POST /api/v1/otlp/v1/traces` over HTTP: what the real OpenTelemetry exporters send is
answered in OTLP, in the request's encoding; every refusal keeps Trailmap's one error shape."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport
from opentelemetry.exporter.otlp.common.http import Compression
from opentelemetry.exporter.otlp.json.http.trace_exporter import (
    OTLPSpanExporter as JSONSpanExporter,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as ProtobufSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto_json.collector.trace.v1.trace_service import (
    ExportTraceServiceResponse as JSONExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tests.api.otlp_common import (
    JSON,
    MAX_BODY,
    MAX_RESOURCES,
    MAX_SPANS,
    PROTOBUF,
    ChunkedBody,
    assert_documented,
    refused,
    refuses_a_body_declared_too_large,
    refuses_a_gzip_bomb,
    refuses_a_wrong_content_type,
    refuses_an_unknown_content_encoding,
    refuses_too_many_entries,
)
from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.ingest.test_otlp_decoding import json_body, protobuf_body, sdk_spans
from tests.ingest.test_otlp_entry_limits import spans_export, trace_body
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

TRACES = "/api/v1/otlp/v1/traces"


@dataclass(frozen=True, slots=True)
class _Accepted(BaseHTTPResult):
    def content(self) -> bytes:
        return b""

    def headers(self) -> Mapping[str, str]:
        return {}


class CapturingTransport(BaseHTTPTransport):
    """Stands in for the network under a real exporter, keeping what it would have sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        del timeout  # nothing waits: the capture is instant
        self.sent.append((method, url, dict(headers or {}), data or b""))
        return _Accepted(status_code=200, reason="OK")

    def close(self) -> None:
        pass

    def is_connection_error(self, exception: Exception | None) -> bool:
        return isinstance(exception, ConnectionError)


# -- success: answered in OTLP, in the request's encoding (needs graph.ingest_traces) -----


async def test_a_protobuf_export_is_answered_with_an_empty_protobuf_response(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = gzip.compress(protobuf_body(sdk_spans()))
    headers = {**tenant.auth(), **PROTOBUF, "Content-Encoding": "gzip"}
    response = await otlp_client.post(TRACES, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert not answer.HasField("partial_success")


async def test_an_otlp_json_export_is_answered_in_json(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.auth(), **JSON}
    response = await otlp_client.post(TRACES, content=json_body(sdk_spans()), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {}


def real_exporter(encoding: str, wire: CapturingTransport, headers: dict[str, str]) -> SpanExporter:
    endpoint = f"http://testserver{TRACES}"
    if encoding == "json":
        return JSONSpanExporter(
            endpoint=endpoint, headers=headers, compression=Compression.GZIP, _transport=wire
        )
    return ProtobufSpanExporter(
        endpoint=endpoint, headers=headers, compression=Compression.GZIP, _transport=wire
    )


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_what_the_real_sdk_exporters_send_is_accepted(
    otlp_client: httpx.AsyncClient, tenant: Tenant, encoding: str
) -> None:
    wire = CapturingTransport()
    exporter = real_exporter(encoding, wire, tenant.auth())
    assert exporter.export(sdk_spans()) == SpanExportResult.SUCCESS
    ((method, url, headers, body),) = wire.sent
    assert (method, url) == ("POST", f"http://testserver{TRACES}")
    assert {k.lower(): v for k, v in headers.items()}["content-encoding"] == "gzip"
    response = await otlp_client.post(TRACES, content=body, headers=headers)
    assert response.status_code == 200, response.text
    if encoding == "json":
        assert response.headers["content-type"] == "application/json"
        JSONExportTraceServiceResponse.from_json(response.content)
    else:
        assert response.headers["content-type"] == "application/x-protobuf"
        ExportTraceServiceResponse.FromString(response.content)


async def test_a_span_with_a_bad_id_is_reported_as_partial_success_in_json(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    document = json.loads(json_body(sdk_spans()))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not hex"
    response = await otlp_client.post(
        TRACES, content=json.dumps(document), headers={**tenant.auth(), **JSON}
    )
    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert "traceId" in partial["errorMessage"]


async def test_rejected_spans_are_reported_as_partial_success_in_protobuf(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    export = encode_spans(sdk_spans())
    export.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01\x02\x03"
    response = await otlp_client.post(
        TRACES, content=export.SerializeToString(), headers={**tenant.auth(), **PROTOBUF}
    )
    assert response.status_code == 200, response.text
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert answer.partial_success.error_message


# -- refusals, each in the one error shape ------------------------------------------------


async def test_a_request_without_a_key_is_refused_with_401(
    otlp_client: httpx.AsyncClient,
) -> None:
    await refused(otlp_client, TRACES, protobuf_body(sdk_spans()), PROTOBUF, 401)


async def test_a_read_only_key_cannot_send_traces(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.auth(tenant.reader), **PROTOBUF}
    await refused(otlp_client, TRACES, protobuf_body(sdk_spans()), headers, 403)


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc", None])
async def test_a_wrong_content_type_is_refused_with_415(
    otlp_client: httpx.AsyncClient, tenant: Tenant, content_type: str | None
) -> None:
    error = await refuses_a_wrong_content_type(otlp_client, tenant, TRACES, content_type)
    assert "application/json" in error


async def test_an_unknown_content_encoding_is_refused_with_415(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await refuses_an_unknown_content_encoding(otlp_client, tenant, TRACES)


async def test_a_body_declared_too_large_is_refused_before_it_is_read(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await refuses_a_body_declared_too_large(otlp_client, tenant, TRACES)


async def test_a_chunked_body_is_cut_off_once_past_the_limit(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = ChunkedBody(chunks=1000)
    await refused(otlp_client, TRACES, body, {**tenant.auth(), **PROTOBUF}, 413)
    assert body.pulled <= MAX_BODY // body.size + 2


async def test_a_gzip_bomb_is_refused_with_413(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await refuses_a_gzip_bomb(otlp_client, tenant, TRACES)


def _empty_resources(count: int, encoding: str) -> bytes:
    if encoding == "protobuf":
        return b"\x0a\x00" * count  # ExportTraceServiceRequest.resource_spans, empty
    return b'{"resourceSpans": [' + b",".join([b"{}"] * count) + b"]}"


async def test_a_gzip_bomb_of_empty_resource_entries_is_refused_with_413_naming_the_limit(
    otlp_client: httpx.AsyncClient, tenant: Tenant, encoding: str
) -> None:
    # A few hundred bytes sent; fifty thousand entries inside, all but a handful unread.
    body = _empty_resources(50_000, encoding)
    await refuses_too_many_entries(
        otlp_client,
        tenant,
        TRACES,
        body,
        encoding,
        words=(
            f"more than {MAX_RESOURCES} resource entries (resourceSpans)",
            "TRAILMAP_OTLP_MAX_RESOURCES",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        ),
    )


async def test_an_export_over_the_span_limit_is_refused_and_one_at_it_is_taken(
    otlp_client: httpx.AsyncClient, tenant: Tenant, encoding: str
) -> None:
    now_ns = time.time_ns()
    at_limit = spans_export([[MAX_SPANS // 2, MAX_SPANS // 2]], start_ns=now_ns)
    response = await otlp_client.post(
        TRACES,
        content=trace_body(at_limit, encoding),
        headers={**tenant.auth(), **(PROTOBUF if encoding == "protobuf" else JSON)},
    )
    assert response.status_code == 200, response.text
    over = spans_export([[MAX_SPANS // 2, MAX_SPANS // 2 + 1]], start_ns=now_ns)
    await refuses_too_many_entries(
        otlp_client,
        tenant,
        TRACES,
        trace_body(over, encoding),
        encoding,
        words=(f"more than {MAX_SPANS} spans", "TRAILMAP_OTLP_MAX_SPANS", "OTEL_BSP_"),
    )


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff garbage"),
        (JSON, b'{"resourceSpans": [ truncated'),
        (JSON, b'{"resourceSpans": {"not": "an array"}}'),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, gzip.compress(b"x" * 1000)[:20]),
        ({**JSON, "Content-Encoding": "gzip"}, b"not gzip at all"),
        ({**PROTOBUF, "Content-Length": "lots"}, b""),
    ],
)
async def test_garbage_is_refused_with_400(
    otlp_client: httpx.AsyncClient, tenant: Tenant, headers: dict[str, str], body: bytes
) -> None:
    response = await otlp_client.post(TRACES, content=body, headers={**tenant.auth(), **headers})
    assert response.status_code == 400, response.text
    assert_error_shape(response)


def test_the_route_is_documented_with_both_encodings_and_its_errors(
    settings: Settings, db: Database
) -> None:
    assert_documented(settings, db, TRACES)
