"""What the graph learns from real instrumentation: spans made by the OpenTelemetry SDK with
the attributes the instrumentation libraries in question set (database clients, Kafka,
gRPC, GenAI clients, Envoy), sent to the real `POST /api/v1/otlp/v1/traces` one service at
a time, and the graph asked over REST and MCP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp.types import TextContent
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as json_spans
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanKind, StatusCode

from tests.conftest import Tenant
from tests.graph.test_graph_api import _mcp, _tool
from tests.graph.test_pairing_in_memory import _app_node
from tests.graph.test_traces_to_graph import ENVIRONMENT, PROPAGATOR, Fleet, http_call
from trailmap import clock
from trailmap.graph.learn.pairing import sweep_pending
from trailmap.graph.model import node_id
from trailmap.settings import Settings
from trailmap.storage import Connection, Database
from trailmap.storage import graph as store

pytestmark = pytest.mark.anyio

GRAPH = "/api/v1/graph"
_FAR_FUTURE_US = 2**62

Edges = dict[tuple[str, str, str], tuple[int, int]]


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    services = (
        "orders",
        "billing",
        "checkout",
        "shipping",
        "assistant",
        "front-envoy",
        "backend",
        "ledger",
    )
    shop = Fleet(dict.fromkeys(services, "1.0.0"))
    try:
        yield shop
    finally:
        shop.shutdown()


async def _send(
    client: httpx.AsyncClient, tenant: Tenant, spans: tuple[ReadableSpan, ...], encoding: str
) -> None:
    """One export, as the SDK's OTLP/HTTP exporter sends it."""
    if encoding == "json":
        body = json_spans(spans).to_json().encode()
        content_type = "application/json"
    else:
        body = encode_spans(list(spans)).SerializeToString()
        content_type = "application/x-protobuf"
    response = await client.post(
        "/api/v1/otlp/v1/traces",
        content=body,
        headers={**tenant.auth(), "content-type": content_type},
    )
    assert response.status_code == 200, response.text
    assert "partialSuccess" not in response.text, response.text


async def _export(
    client: httpx.AsyncClient,
    tenant: Tenant,
    fleet: Fleet,
    *services: str,
    encoding: str = "protobuf",
) -> None:
    for service in services:
        await _send(client, tenant, fleet.take(service), encoding)


async def _sweep_all(db: Database) -> int:
    """Settle every half still waiting, as the sweep does once their wait is over."""
    return await sweep_pending(db, now_us=_FAR_FUTURE_US - 1, max_pending=1_000_000)


async def _edges(db: Database, org_id: str) -> Edges:
    """Every edge as (from, to, kind) -> (calls, errors), counted over all time."""

    def read(conn: Connection) -> Edges:
        names = {row.id: row.name for row in store.node_rows(conn, org_id)}
        edges = store.edge_rows(conn, org_id)
        totals = store.minute_totals(conn, org_id, [e.id for e in edges], 0, _FAR_FUTURE_US)
        return {
            (names[e.source_id], names[e.target_id], e.kind): (
                int(totals[e.id][0]) if e.id in totals else 0,
                int(totals[e.id][1]) if e.id in totals else 0,
            )
            for e in edges
        }

    return await db.read(read)


async def _nodes(db: Database, org_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(name, kind) -> attributes."""
    rows = await db.read(store.node_rows, org_id)
    return {(row.name, row.kind): dict(row.attributes or {}) for row in rows}


async def _get(client: httpx.AsyncClient, tenant: Tenant, path: str, **params: Any) -> Any:
    response = await client.get(f"{GRAPH}{path}", params=params, headers=tenant.auth())
    assert response.status_code == 200, response.text
    return response.json()["data"]


# -- technology -----------------------------------------------------------------------------


def _datastores_and_brokers(fleet: Fleet) -> None:
    """Database, cache, broker and RPC clients, with the attributes their instrumentation
    sets: semantic conventions 1.26+ (`db.system.name`) in orders, the older ones
    (`db.system`, `net.peer.name`, as opentelemetry-instrumentation-psycopg2 and -redis
    set them) in billing and checkout, a Kafka producer and consumer, and a gRPC call to a
    service Trailmap never hears from."""
    orders, billing = fleet.tracer("orders"), fleet.tracer("billing")
    checkout, shipping = fleet.tracer("checkout"), fleet.tracer("shipping")
    with orders.start_as_current_span(
        "INSERT shop.orders",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": "postgresql",
            "db.namespace": "shop",
            "db.operation.name": "INSERT",
            "server.address": "orders-db",
            "server.port": 5432,
        },
    ):
        pass
    with billing.start_as_current_span(
        "SELECT",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.name": "billing",
            "db.statement": "SELECT * FROM invoices",
            "net.peer.name": "billing-db",
            "net.peer.port": 5432,
        },
    ):
        pass
    with checkout.start_as_current_span(
        "GET",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "redis",
            "db.statement": "GET cart:42",
            "db.redis.database_index": 0,
            "net.peer.name": "sessions",
            "net.peer.port": 6379,
        },
    ):
        pass
    with checkout.start_as_current_span(
        "fraud.v1.FraudCheck/Score",
        kind=SpanKind.CLIENT,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": "fraud.v1.FraudCheck",
            "rpc.method": "Score",
            "rpc.grpc.status_code": 0,
            "server.address": "fraud.example.com",
        },
    ):
        pass
    with orders.start_as_current_span(
        "order-events publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": "order-events",
            "messaging.operation.type": "publish",
        },
    ):
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
    with shipping.start_as_current_span(
        "order-events process",
        context=PROPAGATOR.extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": "order-events",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": "shipping",
        },
    ):
        pass


async def test_search_finds_datastores_and_topics_by_their_technology_whatever_their_name(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    _datastores_and_brokers(fleet)
    await _export(client, tenant, fleet, "orders", "billing", "checkout", "shipping")
    await _sweep_all(db)

    postgres = await _get(client, tenant, "/nodes", query="postgres")
    assert [
        (n["name"], n["kind"], n["match"], n["technology"], n["connected_services"])
        for n in postgres["nodes"]
    ] == [
        ("billing-db", "database", "technology", "postgresql", ["billing"]),
        ("orders-db", "database", "technology", "postgresql", ["orders"]),
    ]
    assert (await _get(client, tenant, "/nodes", query="PostgreSQL"))["nodes"] == postgres["nodes"]

    kafka = await _get(client, tenant, "/nodes", query="which services use Kafka?")
    first = kafka["nodes"][0]
    assert (first["name"], first["kind"], first["technology"]) == (
        "order-events",
        "topic",
        "kafka",
    )
    assert first["connected_services"] == ["orders", "shipping"]

    redis = await _get(client, tenant, "/nodes", query="redis")
    assert [(n["name"], n["kind"], n["technology"]) for n in redis["nodes"]] == [
        ("sessions", "cache", "redis")
    ]

    node = await _get(client, tenant, "/nodes/orders-db")
    assert node["attributes"] == {"technology": "postgresql"}
    assert node["connected_services"] == ["orders"]
    grpc = await _get(client, tenant, "/nodes/fraud.example.com")
    assert (grpc["kind"], grpc["attributes"]) == ("external_api", {"technology": "grpc"})
    # A service is found by its name, not by what it talks to.
    assert all(n["kind"] != "service" for n in kafka["nodes"][:1] + postgres["nodes"])


async def test_which_services_connect_to_postgresql_takes_one_mcp_call(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet, settings: Settings
) -> None:
    _datastores_and_brokers(fleet)
    await _export(client, tenant, fleet, "orders", "billing", "checkout", "shipping")
    async with _mcp(settings, db, tenant.reader) as mcp:
        found = await mcp.call_tool("search_nodes", {"query": "PostgreSQL"})
        assert not found.is_error
        (text,) = found.content
        assert isinstance(text, TextContent)
        assert text.text.splitlines() == [
            "- billing-db (database, production) postgresql, used by billing [technology]",
            "- orders-db (database, production) postgresql, used by orders [technology]",
        ]
        assert found.structured_content == await _get(client, tenant, "/nodes", query="PostgreSQL")
        node = await mcp.call_tool("get_node", {"node": "sessions"})
        (text,) = node.content
        assert isinstance(text, TextContent)
        assert "Technology: redis" in text.text.splitlines()
        answer = await _tool(mcp, "get_node", {"node": "order-events"})
        assert answer["attributes"] == {"technology": "kafka"}
        assert answer["connected_services"] == ["orders", "shipping"]


async def test_a_database_stored_without_its_technology_gets_it_when_seen_again(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    """A node recorded before technology was kept (its attributes empty) takes it the next
    time its spans move its last seen time, with no statement of its own."""
    earlier_us = clock.now_us() - 3600 * 1_000_000
    org_id = tenant.org.id

    def recorded_before(conn: Connection) -> None:
        store.upsert_nodes(
            conn,
            org_id,
            [
                {
                    "id": node_id(org_id, "database", ENVIRONMENT, "orders-db"),
                    "kind": "database",
                    "name": "orders-db",
                    "environment": ENVIRONMENT,
                    "attributes": {},
                    "sources": ["otel"],
                    "first_seen_us": earlier_us,
                    "last_seen_us": earlier_us,
                }
            ],
        )

    await db.write(recorded_before)
    assert await _nodes(db, org_id) == {("orders-db", "database"): {}}
    _datastores_and_brokers(fleet)
    await _export(client, tenant, fleet, "orders")
    assert (await _nodes(db, org_id))[("orders-db", "database")] == {"technology": "postgresql"}


# -- GenAI ------------------------------------------------------------------------------------


def _chat(fleet: Fleet, *, provider: dict[str, str], address: str, failed: bool = False) -> None:
    """A chat completion as the GenAI instrumentations (openai-v2, anthropic) record it, and
    under it the SDK's HTTP request as the httpx instrumentation records it."""
    assistant = fleet.tracer("assistant")
    with assistant.start_as_current_span(
        "chat gpt-4o",
        kind=SpanKind.CLIENT,
        attributes={
            **provider,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 48,
            "server.address": address,
            "server.port": 443,
        },
    ) as span:
        with assistant.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "url.full": f"https://{address}/v1/chat/completions",
                "server.address": address,
                "http.response.status_code": 429 if failed else 200,
            },
        ):
            pass
        if failed:
            span.set_attribute("error.type", "RateLimitError")
            span.set_status(StatusCode.ERROR, "rate limited")


async def test_genai_client_spans_make_the_model_provider_a_node_with_its_traffic(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    current = {"gen_ai.provider.name": "openai"}  # semantic conventions 1.37+
    older = {"gen_ai.system": "openai"}
    _chat(fleet, provider=current, address="api.openai.com")
    _chat(fleet, provider=older, address="api.openai.com", failed=True)
    _chat(fleet, provider=older, address="api.openai.com")
    _chat(fleet, provider={"gen_ai.system": "anthropic"}, address="api.anthropic.com")
    await _export(client, tenant, fleet, "assistant", encoding="json")

    # Proved by the span alone, the HTTP request under it the same call: nothing waits,
    # nothing becomes an external API later.
    assert await _sweep_all(db) == 0
    assert await _edges(db, tenant.org.id) == {
        ("assistant", "api.openai.com", "calls"): (3, 1),
        ("assistant", "api.anthropic.com", "calls"): (1, 0),
    }
    nodes = await _nodes(db, tenant.org.id)
    assert nodes[("api.openai.com", "ai_model")] == {"technology": "openai"}
    assert nodes[("api.anthropic.com", "ai_model")] == {"technology": "anthropic"}

    node = await _get(client, tenant, "/nodes/api.openai.com")
    assert node["kind"] == "ai_model"
    assert node["connected_services"] == ["assistant"]
    (line,) = node["upstream"]
    assert (line["from"], line["kind"], line["calls"], line["errors"]) == (
        "assistant",
        "calls",
        3,
        1,
    )
    assert line["p95_ms"] is not None
    found = await _get(client, tenant, "/nodes", query="openai")
    assert [(n["name"], n["kind"]) for n in found["nodes"]] == [("api.openai.com", "ai_model")]
    assert [n["name"] for n in (await _get(client, tenant, "/nodes", query="ai models"))["nodes"]][
        :2
    ] == ["api.anthropic.com", "api.openai.com"]


# -- proxies ----------------------------------------------------------------------------------


def _through_envoy(fleet: Fleet, cluster: str, *, answered: bool) -> None:
    """A request through a front Envoy: its one span per request is a SERVER span (the
    ingress operation) naming the upstream cluster, as Envoy's OpenTelemetry tracer tags it;
    the upstream's own SERVER span, when it has one, is that span's child."""
    envoy = fleet.tracer("front-envoy")
    with envoy.start_as_current_span(
        "ingress",
        kind=SpanKind.SERVER,
        attributes={
            "component": "proxy",
            "node_id": "front-envoy-0",
            "zone": "",
            "http.method": "GET",
            "http.url": "http://shop.example.com/items",
            "http.protocol": "HTTP/1.1",
            "http.status_code": "200",
            "upstream_cluster": cluster,
            "upstream_cluster.name": cluster,
            "peer.address": "10.0.0.9",
            "response_flags": "-",
        },
    ):
        if answered:
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            with fleet.tracer("backend").start_as_current_span(
                "GET /items",
                context=PROPAGATOR.extract(headers),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": "GET", "http.response.status_code": 200},
            ):
                pass


async def test_a_proxy_span_makes_an_edge_to_the_service_it_routes_to_counted_once(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    for _ in range(3):
        _through_envoy(fleet, "backend", answered=True)
    _through_envoy(fleet, "legacy", answered=False)
    _through_envoy(fleet, "outbound|8080||inventory.shop.svc.cluster.local", answered=False)
    await _export(client, tenant, fleet, "backend", "front-envoy")
    await _sweep_all(db)
    assert await _edges(db, tenant.org.id) == {
        ("front-envoy", "backend", "calls"): (3, 0),
        ("front-envoy", "legacy", "calls"): (1, 0),
        ("front-envoy", "inventory", "calls"): (1, 0),
    }
    assert set(await _nodes(db, tenant.org.id)) == {
        ("front-envoy", "service"),
        ("backend", "service"),
        ("legacy", "service"),
        ("inventory", "service"),
    }


async def test_an_egress_proxy_span_names_the_service_of_its_upstream_cluster(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    """A sidecar's egress span is a CLIENT span (Envoy's egress operation), with Istio's
    cluster name and the Host header the app used."""
    with fleet.tracer("front-envoy").start_as_current_span(
        "egress reviews",
        kind=SpanKind.CLIENT,
        attributes={
            "component": "proxy",
            "http.method": "GET",
            "http.url": "http://reviews:9080/reviews/0",
            "http.status_code": "503",
            "upstream_cluster": "outbound|9080||reviews.bookinfo.svc.cluster.local",
            "upstream_cluster.name": "outbound|9080||reviews.bookinfo.svc.cluster.local",
        },
    ):
        pass
    await _export(client, tenant, fleet, "front-envoy")
    await _sweep_all(db)
    assert await _edges(db, tenant.org.id) == {("front-envoy", "reviews", "calls"): (1, 1)}
    assert ("reviews", "service") in await _nodes(db, tenant.org.id)


async def test_peer_service_names_the_service_called_when_it_sends_no_spans_of_its_own(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    checkout, ledger = fleet.tracer("checkout"), fleet.tracer("ledger")
    # ledger is instrumented: the call pairs, once, with its SERVER span.
    with http_call(checkout, ledger, "POST /entries", peer="10.0.0.7"):
        pass
    # ledger-archive is not: checkout's span names it with peer.service.
    for status in (200, 503):
        with checkout.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "http.response.status_code": status,
                "peer.service": "ledger-archive",
                "server.address": "10.0.0.8",
                "url.full": "http://10.0.0.8/archive",
            },
        ):
            pass
    await _export(client, tenant, fleet, "ledger", "checkout")
    await _sweep_all(db)
    assert await _edges(db, tenant.org.id) == {
        ("checkout", "ledger", "calls"): (1, 0),
        ("checkout", "ledger-archive", "calls"): (2, 1),
    }
    assert ("ledger-archive", "service") in await _nodes(db, tenant.org.id)


# -- span links -----------------------------------------------------------------------------


def _messages_in_new_traces(fleet: Fleet, count: int, *, names_topic: bool) -> None:
    """orders publishes `count` messages; shipping processes each in a trace of its own
    whose CONSUMER span links to the message's creation context (the PRODUCER span), as
    the Kafka and most queue instrumentations do; the last two in one batch span linking
    to both. Without `names_topic`, the consumer names only the messaging system."""
    orders, shipping = fleet.tracer("orders"), fleet.tracer("shipping")
    carriers: list[dict[str, str]] = []
    for _ in range(count):
        with orders.start_as_current_span(
            "order-events publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": "order-events",
                "messaging.operation.type": "publish",
            },
        ):
            carrier: dict[str, str] = {}
            PROPAGATOR.inject(carrier)
            carriers.append(carrier)
    consumer_attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": "shipping",
    }
    if names_topic:
        consumer_attributes["messaging.destination.name"] = "order-events"
    batches = [[c] for c in carriers[:-2]] + [carriers[-2:]]
    for batch in batches:
        links = [
            Link(trace.get_current_span(PROPAGATOR.extract(c)).get_span_context()) for c in batch
        ]
        if len(batch) > 1:
            consumer_attributes["messaging.batch.message_count"] = len(batch)
        with shipping.start_as_current_span(
            "order-events process",
            context=otel_context.Context(),  # a new trace: the producer only through links
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=consumer_attributes,
        ) as span:
            assert span.get_span_context().trace_id not in {link.context.trace_id for link in links}


@pytest.mark.parametrize("names_topic", [True, False], ids=["topic-named", "system-only"])
@pytest.mark.parametrize(
    ("first", "encoding"),
    [("orders", "protobuf"), ("shipping", "protobuf"), ("shipping", "json")],
    ids=["producer-first", "consumer-first", "consumer-first-json"],
)
async def test_a_consumer_linked_to_its_producer_is_joined_to_the_topic(
    client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
    fleet: Fleet,
    names_topic: bool,
    first: str,
    encoding: str,
) -> None:
    _messages_in_new_traces(fleet, 4, names_topic=names_topic)
    second = "shipping" if first == "orders" else "orders"
    await _export(client, tenant, fleet, first, second, encoding=encoding)
    edges = await _edges(db, tenant.org.id)
    await _sweep_all(db)
    # Paired at ingestion (the sweep adds nothing): producer -> topic <- consumer, each
    # message consumed counted once, the batch's two included.
    assert edges == await _edges(db, tenant.org.id)
    assert edges == {
        ("orders", "order-events", "publishes"): (4, 0),
        ("shipping", "order-events", "consumes"): (4 if not names_topic else 3, 0),
    }
    topic = await _get(client, tenant, "/nodes/order-events")
    assert topic["connected_services"] == ["orders", "shipping"]
    assert topic["attributes"] == {"technology": "kafka"}
    path = await _get(client, tenant, "/paths", **{"from": "orders", "to": "shipping"})
    assert path["paths"][0]["nodes"] == ["orders", "order-events", "shipping"]


async def test_a_linked_consumer_whose_producer_never_comes_consumes_what_it_names(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    """As a consumer in its producer's trace: once its wait is over, it consumes from the
    topic its spans name (here only the system, so a topic named after it), per message."""
    _messages_in_new_traces(fleet, 2, names_topic=False)
    fleet.take("orders")
    await _export(client, tenant, fleet, "shipping")
    assert await _edges(db, tenant.org.id) == {}
    await _sweep_all(db)
    assert await _edges(db, tenant.org.id) == {("shipping", "kafka", "consumes"): (2, 0)}


@pytest.mark.parametrize("first", ["orders", "shipping"], ids=["producer-first", "consumer-first"])
async def test_linked_consumers_pair_with_their_producer_in_an_app_nodes_memory(
    db: Database, database_url: str, tenant: Tenant, fleet: Fleet, first: str
) -> None:
    _messages_in_new_traces(fleet, 3, names_topic=False)
    second = "shipping" if first == "orders" else "orders"
    async with _app_node(database_url) as (http, memory):
        await _export(http, tenant, fleet, first, second)
        # The producer's halves wait on for more consumers; the consumer's paired.
        assert memory.waiting == 3
        assert await _edges(db, tenant.org.id) == {
            ("orders", "order-events", "publishes"): (3, 0),
            ("shipping", "order-events", "consumes"): (3, 0),
        }


async def test_a_consumer_span_waits_for_at_most_128_linked_producers(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fleet: Fleet
) -> None:
    """An SDK keeps 128 links a span by default; a span with more (sent by hand, past the
    SDK's limit) is read as far as that, so that one span cannot fill the pending table."""
    with fleet.tracer("shipping").start_as_current_span(
        "order-events process",
        context=otel_context.Context(),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "kafka", "messaging.operation.type": "process"},
    ):
        pass
    request = encode_spans(list(fleet.take("shipping")))
    (span,) = request.resource_spans[0].scope_spans[0].spans
    for n in range(300):
        span.links.add(trace_id=(n + 1).to_bytes(16, "big"), span_id=(n + 1).to_bytes(8, "big"))
    response = await client.post(
        "/api/v1/otlp/v1/traces",
        content=request.SerializeToString(),
        headers={**tenant.auth(), "content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200, response.text
    assert await db.read(store.count_pending, tenant.org.id) == 128
