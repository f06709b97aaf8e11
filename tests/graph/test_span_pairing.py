"""Pairing the two halves of a call that arrive in different requests, and the sweep that
settles the halves whose partner never came: spans made by the real OpenTelemetry SDK,
encoded by its OTLP encoder, ingested with `ingest_traces`, and the graph read back from the
database with exact call and error counts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import Tenant
from tests.factories import principal_for
from tests.graph.test_traces_to_graph import PROPAGATOR, Fleet, http_call
from trailmap import clock
from trailmap.accounts import Principal
from trailmap.graph.learn.pairing import TraceIngestResult, ingest_traces, sweep_pending
from trailmap.graph.learn.spans import observe_request, payload_of
from trailmap.storage import Connection, Database
from trailmap.storage import graph as store

pytestmark = pytest.mark.anyio

T = TypeVar("T")

_US = 1_000_000
_NS = 1_000
_WAIT_S = 30  # the pairing wait every test ingests with
_FAR_FUTURE_US = 2**62
_GATE_TIMEOUT_S = 10.0

Edges = dict[tuple[str, str, str], tuple[int, int]]


@pytest.fixture
def principal(tenant: Tenant) -> Principal:
    return principal_for(tenant.org)


async def _ingest(
    db: Database,
    principal: Principal,
    *parts: Sequence[ReadableSpan],
    now: datetime | None = None,
) -> TraceIngestResult:
    """One OTLP request holding the given spans (of one or several services)."""
    spans = [span for part in parts for span in part]
    return await ingest_traces(
        db, principal, encode_spans(spans), now=now, pairing_wait_seconds=_WAIT_S
    )


async def _edges(db: Database, org_id: str) -> Edges:
    """Every edge as (from, to, kind) -> (calls, errors), counted over all time."""

    def read(conn: Connection) -> Edges:
        names = {row.id: row.name for row in store.node_rows(conn, org_id)}
        edges = store.edge_rows(conn, org_id)
        totals = store.minute_totals(conn, org_id, [e.id for e in edges], 0, _FAR_FUTURE_US)
        return {
            (names[e.source_id], names[e.target_id], e.kind): (
                int(totals[e.id][0]),
                int(totals[e.id][1]),
            )
            for e in edges
        }

    return await db.read(read)


async def _nodes(db: Database, org_id: str) -> set[tuple[str, str]]:
    rows = await db.read(store.node_rows, org_id)
    return {(row.name, row.kind) for row in rows}


async def _sweep_all(db: Database) -> int:
    """Settle every half still waiting, as the sweep would once all their waits are over."""
    return await sweep_pending(db, now_us=_FAR_FUTURE_US - 1, max_pending=1_000_000)


def _checkout_calls_payments(fleet: Fleet, *, status: int = 200) -> None:
    """checkout's CLIENT span (naming its peer, as HTTP instrumentation does) and the SERVER
    span it causes in payments."""
    with http_call(
        fleet.tracer("checkout"),
        fleet.tracer("payments"),
        "POST /charge",
        peer="payments",
        status=status,
    ):
        pass


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    services = ("checkout", "payments", "orders", "shipping", "billing")
    shop = Fleet(dict.fromkeys(services, "1.0.0"))
    try:
        yield shop
    finally:
        shop.shutdown()


# -- pairing at ingestion -----------------------------------------------------------------


@pytest.mark.parametrize("first", ["checkout", "payments"])
async def test_the_two_halves_of_a_call_pair_across_two_requests_in_either_order(
    db: Database, principal: Principal, fleet: Fleet, first: str
) -> None:
    _checkout_calls_payments(fleet)
    _checkout_calls_payments(fleet, status=503)
    second = "payments" if first == "checkout" else "checkout"
    await _ingest(db, principal, fleet.take(first))
    assert await _edges(db, principal.org_id) == {}
    await _ingest(db, principal, fleet.take(second))
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (2, 1)}
    # Nothing was left waiting: no half turns into an edge to an external "payments".
    assert await _sweep_all(db) == 0
    assert await _nodes(db, principal.org_id) == {
        ("checkout", "service"),
        ("payments", "service"),
    }


async def test_a_server_span_whose_client_never_comes_makes_no_edge(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _checkout_calls_payments(fleet)
    fleet.take("checkout")  # the caller is not instrumented, or its spans were lost
    await _ingest(db, principal, fleet.take("payments"))
    assert await _sweep_all(db) == 1
    assert await _edges(db, principal.org_id) == {}
    assert await _nodes(db, principal.org_id) == {("payments", "service")}


async def test_an_unanswered_client_span_becomes_an_external_api_once_its_wait_is_over(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    for declined in (False, True, False):
        with fleet.tracer("payments").start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={"server.address": "api.stripe.com", "http.request.method": "POST"},
        ) as span:
            if declined:
                span.set_status(StatusCode.ERROR, "card declined")
    now = clock.now()
    await _ingest(db, principal, fleet.take("payments"), now=now)
    expires_us = clock.to_us(now) + _WAIT_S * _US

    assert await sweep_pending(db, now_us=expires_us, max_pending=1_000) == 0
    assert await _edges(db, principal.org_id) == {}
    assert await sweep_pending(db, now_us=expires_us + 1, max_pending=1_000) == 3
    assert await _edges(db, principal.org_id) == {("payments", "api.stripe.com", "calls"): (3, 1)}
    assert ("api.stripe.com", "external_api") in await _nodes(db, principal.org_id)


# -- the sweep and halves that were both stored ---------------------------------------------


async def test_the_sweep_pairs_two_stored_halves_even_when_only_one_has_expired(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    """Two app nodes that store the two halves of one call at the same moment each miss the
    other: both halves are left waiting. That end state, stored as ingestion stores it: the
    caller's wait is over, the callee's not yet."""
    _checkout_calls_payments(fleet, status=500)
    now_us = clock.now_us()
    for service, expires_us in (("checkout", now_us), ("payments", now_us + _WAIT_S * _US)):
        observed = observe_request(
            encode_spans(fleet.take(service)), oldest_us=0, newest_us=_FAR_FUTURE_US
        )
        halves = [(h[0], h[1], h[2], payload_of(h)) for h in observed.halves]
        assert len(halves) == 1
        await db.write(store.add_pending, principal.org_id, halves, expires_us)

    assert await sweep_pending(db, now_us=now_us + 1, max_pending=1_000) == 2
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (1, 1)}
    assert await _sweep_all(db) == 0


class _CommitHeld(Database):
    """A Database whose writes do their work, then wait for `release` before committing: two
    ingestions that overlap as two app nodes' can."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered = threading.Event()
        self.release = threading.Event()

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def held(conn: Connection, *a: Any, **k: Any) -> T:
            result = fn(conn, *a, **k)
            self.entered.set()
            assert self.release.wait(_GATE_TIMEOUT_S), "the other ingestion never finished"
            return result

        return await super().write(held, *args, **kwargs)


@contextmanager
def _commit_held(url: str) -> Iterator[_CommitHeld]:
    held = _CommitHeld(url)
    try:
        yield held
    finally:
        held.release.set()
        held.close()


async def test_two_ingestions_that_overlap_leave_both_halves_and_the_sweep_pairs_them(
    db: Database, database_url: str, principal: Principal, fleet: Fleet
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: two ingestions cannot overlap")
    # Both services are known already, so the two transactions touch disjoint rows.
    _checkout_calls_payments(fleet)
    await _ingest(db, principal, fleet.take("checkout"), fleet.take("payments"))
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (1, 0)}

    _checkout_calls_payments(fleet, status=500)
    caller, callee = fleet.take("checkout"), fleet.take("payments")
    with _commit_held(database_url) as held:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_ingest, held, principal, caller)
            # The caller's half is stored but not committed when the callee's arrives.
            assert await anyio.to_thread.run_sync(held.entered.wait, _GATE_TIMEOUT_S)
            await _ingest(db, principal, callee)
            held.release.set()
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (1, 0)}

    assert (
        await sweep_pending(db, now_us=clock.now_us() + (_WAIT_S + 1) * _US, max_pending=1_000) == 2
    )
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (2, 1)}
    assert ("payments", "external_api") not in await _nodes(db, principal.org_id)


# -- messages -----------------------------------------------------------------------------


def _order_event_for_two_consumers(fleet: Fleet) -> None:
    """orders publishes one message that shipping and billing both consume. The consumers'
    instrumentation names only the messaging system, so the topic comes from the producer."""
    with fleet.tracer("orders").start_as_current_span(
        "send order-events",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": "order-events"},
    ):
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
    for consumer in ("shipping", "billing"):
        with fleet.tracer(consumer).start_as_current_span(
            "process",
            context=PROPAGATOR.extract(carrier),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka"},
        ):
            pass


_FAN_OUT = {
    ("orders", "order-events", "publishes"): (1, 0),
    ("shipping", "order-events", "consumes"): (1, 0),
    ("billing", "order-events", "consumes"): (1, 0),
}


@pytest.mark.parametrize(
    "arrival",
    [
        ["orders", "shipping", "billing"],
        ["shipping", "billing", "orders"],
        ["shipping", "orders", "billing"],
        ["orders+shipping+billing"],
    ],
    ids=["producer-first", "consumers-first", "producer-between", "one-request"],
)
async def test_a_message_consumed_by_two_services_makes_two_consumes_edges(
    db: Database, principal: Principal, fleet: Fleet, arrival: list[str]
) -> None:
    _order_event_for_two_consumers(fleet)
    for request in arrival:
        await _ingest(db, principal, *(fleet.take(s) for s in request.split("+")))
    await _sweep_all(db)
    assert await _edges(db, principal.org_id) == _FAN_OUT


# -- what is refused ------------------------------------------------------------------------


def _with_bad_spans(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """The request with four more spans, copies of its first with one thing wrong each."""
    spans = request.resource_spans[0].scope_spans[0].spans
    model = spans[0]
    for change in ("short span id", "short trace id", "zero trace id", "ends before start"):
        bad = spans.add()
        bad.CopyFrom(model)
        if change == "short span id":
            bad.span_id = b"\x01\x02\x03\x04"
        elif change == "short trace id":
            bad.trace_id = b"\x01" * 8
        elif change == "zero trace id":
            bad.trace_id = bytes(16)
        else:
            bad.end_time_unix_nano = bad.start_time_unix_nano - 1
    return request


async def test_spans_with_bad_ids_are_refused_and_counted_and_the_rest_kept(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    orders = fleet.tracer("orders")
    for _ in range(2):
        with orders.start_as_current_span(
            "INSERT orders",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "server.address": "orders-db"},
        ):
            pass
    request = _with_bad_spans(encode_spans(fleet.take("orders")))
    result = await ingest_traces(db, principal, request)
    assert (result.accepted_spans, result.rejected_spans) == (2, 4)
    assert result.problems == [
        "a span's trace_id must be 16 bytes and its span_id 8 bytes",
        "a span's end_time_unix_nano is before its start_time_unix_nano",
    ]
    assert await _edges(db, principal.org_id) == {("orders", "orders-db", "reads_writes"): (2, 0)}


async def test_spans_older_than_retention_or_far_in_the_future_are_refused(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    now = clock.now()
    tracer = fleet.tracer("orders")
    moments = {
        "older than retention": now - timedelta(days=principal.retention_days, minutes=1),
        "oldest kept": now - timedelta(days=principal.retention_days) + timedelta(minutes=1),
        "a little ahead (clock skew)": now + timedelta(minutes=59),
        "hours ahead": now + timedelta(hours=2),
    }
    for name, moment in moments.items():
        start_ns = clock.to_us(moment) * _NS
        span = tracer.start_span(
            name,
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "server.address": name},
            start_time=start_ns,
        )
        span.end(end_time=start_ns + 2_000_000)
    result = await _ingest(db, principal, fleet.take("orders"), now=now)
    assert (result.accepted_spans, result.rejected_spans) == (2, 2)
    assert len(result.problems) == 1
    assert "outside the accepted window" in result.problems[0]
    assert set(await _edges(db, principal.org_id)) == {
        ("orders", "oldest kept", "reads_writes"),
        ("orders", "a little ahead (clock skew)", "reads_writes"),
    }


async def test_max_pending_bounds_the_waiting_halves_and_the_oldest_are_settled_first(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    start = clock.now()
    for i in range(5):
        with fleet.tracer("payments").start_as_current_span(
            "POST", kind=SpanKind.CLIENT, attributes={"server.address": f"api{i}.example.com"}
        ):
            pass
        # Each ingested a second after the one before: each waits until a second later.
        await _ingest(db, principal, fleet.take("payments"), now=start + timedelta(seconds=i))

    before_any_expires = clock.to_us(start)
    assert await sweep_pending(db, now_us=before_any_expires, max_pending=3) == 2
    assert set(await _edges(db, principal.org_id)) == {
        ("payments", "api0.example.com", "calls"),
        ("payments", "api1.example.com", "calls"),
    }
    assert await sweep_pending(db, now_us=before_any_expires, max_pending=3) == 0
    assert await _sweep_all(db) == 3
    assert len(await _edges(db, principal.org_id)) == 5
