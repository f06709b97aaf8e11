"""Pairing in an app node's memory (`TraceIngestion`): halves wait there a few seconds, the
ones still alone are stored for the other app nodes, everything waiting is stored when the app
stops, and two apps on one database still pair the calls they split between them. Spans are
made by the real OpenTelemetry SDK; the graph is read back from the database."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import Tenant
from tests.factories import principal_for
from tests.graph.test_traces_to_graph import Fleet, http_call
from trailmap import clock
from trailmap.accounts import Principal
from trailmap.app import create_app
from trailmap.errors import Unavailable
from trailmap.graph.learn.pairing import TraceIngestion, sweep_pending
from trailmap.settings import Settings
from trailmap.storage import Connection, Database
from trailmap.storage import graph as store

pytestmark = pytest.mark.anyio

T = TypeVar("T")

_US = 1_000_000
_WAIT_S = 30
_MEMORY_S = 5.0
_FAR_FUTURE_US = 2**62
_GATE_TIMEOUT_S = 10.0

Edges = dict[tuple[str, str, str], tuple[int, int]]


@pytest.fixture
def principal(tenant: Tenant) -> Principal:
    return principal_for(tenant.org)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    shop = Fleet(dict.fromkeys(("checkout", "payments"), "1.0.0"))
    try:
        yield shop
    finally:
        shop.shutdown()


@asynccontextmanager
async def _opened(
    db: Database, *, max_waiting: int = 1000, stats_seconds: float = 0.0
) -> AsyncIterator[TraceIngestion]:
    ingestion = TraceIngestion(
        db,
        wait_seconds=_WAIT_S,
        memory_seconds=_MEMORY_S,
        max_waiting=max_waiting,
        stats_seconds=stats_seconds,
    )
    ingestion.open()
    try:
        yield ingestion
    finally:
        await ingestion.close()


async def _edges(db: Database, org_id: str) -> Edges:
    """Every edge as (from, to, kind) -> (calls, errors), counted over all time."""

    def read(conn: Connection) -> Edges:
        names = {row.id: row.name for row in store.node_rows(conn, org_id)}
        edges = store.edge_rows(conn, org_id)
        totals = store.minute_totals(conn, org_id, [e.id for e in edges], 0, _FAR_FUTURE_US)
        return {
            (names[e.source_id], names[e.target_id], e.kind): (
                (int(totals[e.id][0]), int(totals[e.id][1])) if e.id in totals else (0, 0)
            )
            for e in edges
        }

    return await db.read(read)


async def _stored(db: Database, org_id: str) -> int:
    return await db.read(store.count_pending, org_id)


async def _sweep_all(db: Database) -> int:
    return await sweep_pending(db, now_us=_FAR_FUTURE_US - 1, max_pending=1_000_000)


def _calls(fleet: Fleet, count: int = 1, *, status: int = 200) -> None:
    """checkout's CLIENT spans and the SERVER spans they cause in payments."""
    for _ in range(count):
        with http_call(
            fleet.tracer("checkout"),
            fleet.tracer("payments"),
            "POST /charge",
            peer="payments",
            status=status,
        ):
            pass


def _stripe_call(fleet: Fleet) -> None:
    """A call to an API that sends no spans back: its CLIENT span stays alone."""
    with fleet.tracer("payments").start_as_current_span(
        "POST", kind=SpanKind.CLIENT, attributes={"server.address": "api.stripe.com"}
    ):
        pass


async def _ingest(ingestion: TraceIngestion, principal: Principal, spans: Any) -> None:
    result = await ingestion.ingest(principal, encode_spans(list(spans)))
    assert result.rejected_spans == 0


# -- one app node ---------------------------------------------------------------------------


class _ThreadsOfWrites(Database):
    """A Database noting the thread of each write TraceIngestion makes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.threads: list[threading.Thread] = []

    def write_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.threads.append(threading.current_thread())
        return super().write_sync(fn, *args, **kwargs)


async def test_a_request_is_read_paired_and_written_on_a_worker_thread(
    database_url: str, principal: Principal, fleet: Fleet
) -> None:
    """Nothing of a request's work runs on the event loop: a few kilobytes of gzip can hold
    millions of entries, and every other request would wait for their Python."""
    _calls(fleet)
    readers: list[threading.Thread] = []

    def read() -> Any:
        readers.append(threading.current_thread())
        return encode_spans(list(fleet.take("checkout")))

    noted = _ThreadsOfWrites(database_url)
    try:
        async with _opened(noted, max_waiting=0) as ingestion:  # the half is stored at once
            await ingestion.ingest_export(principal, read)
    finally:
        noted.close()
    loop = threading.current_thread()
    assert readers
    assert loop not in readers
    assert noted.threads[0] is readers[0], "one hop: the write from the reading thread"


async def test_no_more_requests_are_read_at_once_than_the_workers_allow(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _calls(fleet, 2)
    workers = anyio.CapacityLimiter(1)
    ingestion = TraceIngestion(
        db, wait_seconds=_WAIT_S, memory_seconds=_MEMORY_S, max_waiting=10, workers=workers
    )
    entered, release = threading.Event(), threading.Event()
    reading = [0]

    def read(spans: Any) -> Any:
        reading[0] += 1
        entered.set()
        assert release.wait(_GATE_TIMEOUT_S), "the test never let the first request go"
        return encode_spans(list(spans))

    first, second = fleet.take("checkout"), fleet.take("payments")
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: ingestion.ingest_export(principal, lambda: read(first)))
            assert await anyio.to_thread.run_sync(entered.wait, _GATE_TIMEOUT_S)
            tasks.start_soon(lambda: ingestion.ingest_export(principal, lambda: read(second)))
            await anyio.wait_all_tasks_blocked()
            # The second waits for the worker, not on a thread of its own.
            assert reading[0] == 1
            assert workers.statistics().tasks_waiting == 1
            release.set()
    finally:
        release.set()
    assert reading[0] == 2


async def test_the_two_halves_of_a_call_pair_in_memory_and_neither_is_stored(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _calls(fleet, 2, status=500)
    async with _opened(db) as ingestion:
        await _ingest(ingestion, principal, fleet.take("payments"))
        assert ingestion.waiting == 2
        await _ingest(ingestion, principal, fleet.take("checkout"))
        assert ingestion.waiting == 0
        assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (2, 2)}
    assert await _stored(db, principal.org_id) == 0


async def test_a_half_alone_is_stored_once_its_time_in_memory_is_over(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _stripe_call(fleet)
    async with _opened(db) as ingestion:
        arrived_us = clock.now_us()
        await _ingest(ingestion, principal, fleet.take("payments"))
        # Still within its time in memory: nothing is stored.
        assert await ingestion.store_due(now_us=arrived_us) == 0
        assert await _stored(db, principal.org_id) == 0
        after_us = clock.now_us() + int(_MEMORY_S * _US)
        assert await ingestion.store_due(now_us=after_us) == 1
        assert ingestion.waiting == 0
        assert await _stored(db, principal.org_id) == 1
        # Stored, it waits its full wait again before the sweep gives up on it.
        assert await sweep_pending(db, now_us=after_us + _WAIT_S * _US, max_pending=100) == 0
        assert await sweep_pending(db, now_us=after_us + _WAIT_S * _US + 1, max_pending=100) == 1
    assert await _edges(db, principal.org_id) == {("payments", "api.stripe.com", "calls"): (1, 0)}


async def test_a_half_stored_by_one_request_pairs_with_its_partner_stored_later(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _calls(fleet)
    async with _opened(db) as ingestion:
        await _ingest(ingestion, principal, fleet.take("checkout"))
        assert await ingestion.store_due(now_us=_FAR_FUTURE_US) == 1
        # The partner arrives after its caller left memory: it waits, and pairs when stored.
        await _ingest(ingestion, principal, fleet.take("payments"))
        assert ingestion.waiting == 1
        assert await _edges(db, principal.org_id) == {}
        assert await ingestion.store_due(now_us=_FAR_FUTURE_US) == 1
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (1, 0)}
    assert await _stored(db, principal.org_id) == 0


async def test_closing_stores_every_half_still_waiting_in_memory(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _calls(fleet, 3)
    _stripe_call(fleet)
    async with _opened(db) as ingestion:
        await _ingest(ingestion, principal, fleet.take("checkout"))
        await _ingest(ingestion, principal, fleet.take("payments"))
        assert ingestion.waiting == 1
    assert ingestion.waiting == 0
    assert await _stored(db, principal.org_id) == 1
    assert await _sweep_all(db) == 1
    assert await _edges(db, principal.org_id) == {
        ("checkout", "payments", "calls"): (3, 0),
        ("payments", "api.stripe.com", "calls"): (1, 0),
    }


async def test_past_the_cap_the_oldest_halves_are_stored_by_the_request_that_overflows(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    async with _opened(db, max_waiting=2) as ingestion:
        for count in range(1, 5):
            _stripe_call(fleet)
            await _ingest(ingestion, principal, fleet.take("payments"))
            assert ingestion.waiting == min(count, 2)
            assert await _stored(db, principal.org_id) == max(0, count - 2)
    assert await _stored(db, principal.org_id) == 4


async def test_an_export_sent_twice_waits_once(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _stripe_call(fleet)
    spans = fleet.take("payments")
    async with _opened(db) as ingestion:
        await _ingest(ingestion, principal, spans)
        await _ingest(ingestion, principal, spans)
        assert ingestion.waiting == 1
    assert await _stored(db, principal.org_id) == 1


class _FailingWrites(Database):
    """A Database whose writes fail while `failing` is set, as when the database is down."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.failing = False

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.failing:
            raise Unavailable("The database is not answering right now; retry in a few seconds.")
        return await super().write(fn, *args, **kwargs)

    # TraceIngestion writes from its worker thread.
    def write_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.failing:
            raise Unavailable("The database is not answering right now; retry in a few seconds.")
        return super().write_sync(fn, *args, **kwargs)


async def test_a_request_whose_write_fails_leaves_memory_as_it_was_for_the_retry(
    database_url: str, principal: Principal, fleet: Fleet
) -> None:
    _calls(fleet)
    failing = _FailingWrites(database_url)
    try:
        async with _opened(failing) as ingestion:
            await _ingest(ingestion, principal, fleet.take("checkout"))
            callee = fleet.take("payments")
            failing.failing = True
            with pytest.raises(Unavailable):
                await _ingest(ingestion, principal, callee)
            # The caller's half waits again; the failed request's half is gone with it.
            assert ingestion.waiting == 1
            failing.failing = False
            await _ingest(ingestion, principal, callee)  # the client's retry
            assert ingestion.waiting == 0
        assert await _edges(failing, principal.org_id) == {
            ("checkout", "payments", "calls"): (1, 0)
        }
    finally:
        failing.close()


async def test_a_store_that_fails_keeps_the_halves_in_memory_for_the_next_attempt(
    database_url: str, principal: Principal, fleet: Fleet
) -> None:
    _stripe_call(fleet)
    failing = _FailingWrites(database_url)
    try:
        async with _opened(failing) as ingestion:
            await _ingest(ingestion, principal, fleet.take("payments"))
            failing.failing = True
            with pytest.raises(Unavailable):
                await ingestion.store_due(now_us=_FAR_FUTURE_US)
            assert ingestion.waiting == 1
            failing.failing = False
            assert await ingestion.store_due(now_us=_FAR_FUTURE_US) == 1
        assert await _stored(failing, principal.org_id) == 1
    finally:
        failing.close()


async def test_unopened_ingestion_pairs_against_the_database_at_once(
    db: Database, principal: Principal, fleet: Fleet
) -> None:
    _calls(fleet)
    ingestion = TraceIngestion(db, wait_seconds=_WAIT_S, memory_seconds=_MEMORY_S, max_waiting=10)
    await _ingest(ingestion, principal, fleet.take("checkout"))
    assert ingestion.waiting == 0
    assert await _stored(db, principal.org_id) == 1
    await _ingest(ingestion, principal, fleet.take("payments"))
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (1, 0)}
    assert await _stored(db, principal.org_id) == 0


def _queries(fleet: Fleet, count: int, *, failed: int = 0) -> None:
    """payments' queries to its database: edges a span proves alone, no halves."""
    for i in range(count):
        with fleet.tracer("payments").start_as_current_span(
            "SELECT",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "server.address": "payments-db"},
        ) as span:
            if i < failed:
                span.set_status(StatusCode.ERROR, "timeout")


class _CountedWrites(Database):
    """A Database that counts its write transactions (TraceIngestion's, made from its
    worker thread)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writes = 0

    def write_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.writes += 1
        return super().write_sync(fn, *args, **kwargs)


async def test_statistics_add_up_in_memory_and_a_request_proving_nothing_new_writes_nothing(
    database_url: str, principal: Principal, fleet: Fleet
) -> None:
    counted = _CountedWrites(database_url)
    try:
        async with _opened(counted, stats_seconds=1.0) as ingestion:
            _queries(fleet, 3, failed=1)
            await _ingest(ingestion, principal, fleet.take("payments"))
            # The new nodes and edge are stored at once; their statistics wait in memory.
            assert counted.writes == 1
            assert await _edges(counted, principal.org_id) == {
                ("payments", "payments-db", "reads_writes"): (0, 0)
            }
            _queries(fleet, 2)
            await _ingest(ingestion, principal, fleet.take("payments"))
            assert counted.writes == 1
            assert await ingestion.store_due() == 0
            assert counted.writes == 2
            assert await _edges(counted, principal.org_id) == {
                ("payments", "payments-db", "reads_writes"): (5, 1)
            }
            _queries(fleet, 1)
            await _ingest(ingestion, principal, fleet.take("payments"))
        # Closing stores what was added up since.
        assert await _edges(counted, principal.org_id) == {
            ("payments", "payments-db", "reads_writes"): (6, 1)
        }
    finally:
        counted.close()


async def test_statistics_whose_store_fails_are_kept_for_the_next_attempt(
    database_url: str, principal: Principal, fleet: Fleet
) -> None:
    failing = _FailingWrites(database_url)
    try:
        async with _opened(failing, stats_seconds=1.0) as ingestion:
            _queries(fleet, 2)
            await _ingest(ingestion, principal, fleet.take("payments"))
            failing.failing = True
            with pytest.raises(Unavailable):
                await ingestion.store_due()
            _queries(fleet, 1)
            await _ingest(ingestion, principal, fleet.take("payments"))  # nothing to write
            failing.failing = False
            await ingestion.store_due()
        assert await _edges(failing, principal.org_id) == {
            ("payments", "payments-db", "reads_writes"): (3, 0)
        }
    finally:
        failing.close()


# -- two app nodes on one database ----------------------------------------------------------


@asynccontextmanager
async def _app_node(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, TraceIngestion]]:
    """A whole app with its lifespan running (so it pairs in memory), and its own
    connections to the shared database, as a separate app node would have."""
    database = Database(database_url)
    app = create_app(
        Settings(
            database_url=database_url,
            retention_purge_interval_seconds=0,
            span_pairing_wait_seconds=_WAIT_S,
            span_pairing_memory_seconds=60,
        ),
        database=database,
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http,
        ):
            ingestion = app.state.trace_ingestion
            assert isinstance(ingestion, TraceIngestion)
            yield http, ingestion
    finally:
        database.close()


async def _post(http: httpx.AsyncClient, tenant: Tenant, spans: tuple[ReadableSpan, ...]) -> None:
    response = await http.post(
        "/api/v1/otlp/v1/traces",
        content=encode_spans(list(spans)).SerializeToString(),
        headers={**tenant.auth(), "content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200, response.text


async def test_two_app_nodes_pair_the_halves_they_split_once_they_stop(
    db: Database, database_url: str, tenant: Tenant, fleet: Fleet
) -> None:
    """Without the Collector's trace-ID routing, a call's halves reach different app nodes:
    each waits in its node's memory, and they pair in the database once stored."""
    _calls(fleet, 2, status=503)
    _stripe_call(fleet)
    async with _app_node(database_url) as (first, first_memory):
        async with _app_node(database_url) as (second, second_memory):
            await _post(first, tenant, fleet.take("checkout"))
            await _post(second, tenant, fleet.take("payments"))
            assert (first_memory.waiting, second_memory.waiting) == (2, 3)
            assert await _edges(db, tenant.org.id) == {}
        # The second node stopped: its halves are stored, waiting for the first node's.
        assert second_memory.waiting == 0
        assert await _stored(db, tenant.org.id) == 3
    # The first stopped too: its halves met the stored ones.
    assert await _edges(db, tenant.org.id) == {("checkout", "payments", "calls"): (2, 2)}
    assert await _stored(db, tenant.org.id) == 1  # the call to Stripe, waiting its time
    assert await _sweep_all(db) == 1
    assert ("payments", "api.stripe.com", "calls") in await _edges(db, tenant.org.id)


class _HeldCommits(Database):
    """A Database whose writes, once `armed`, do their work and then wait for `release`
    before committing: two app nodes storing halves at the same moment."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def write_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self.armed:
            return super().write_sync(fn, *args, **kwargs)

        def held(conn: Connection, *a: Any, **k: Any) -> T:
            result = fn(conn, *a, **k)
            self.entered.set()
            assert self.release.wait(_GATE_TIMEOUT_S), "the other store never finished"
            return result

        return super().write_sync(held, *args, **kwargs)


async def test_halves_that_two_app_nodes_store_at_the_same_moment_are_paired_by_the_sweep(
    db: Database, database_url: str, principal: Principal, fleet: Fleet
) -> None:
    """Each node's store runs before the other's commits, so neither sees the other's half:
    both are stored, and the sweep pairs them."""
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: two stores cannot overlap")
    _calls(fleet)
    held = _HeldCommits(database_url)
    try:
        async with _opened(held) as caller_node, _opened(db) as callee_node:
            await _ingest(caller_node, principal, fleet.take("checkout"))
            await _ingest(callee_node, principal, fleet.take("payments"))
            held.armed = True
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(lambda: caller_node.store_due(everything=True))
                assert await anyio.to_thread.run_sync(held.entered.wait, _GATE_TIMEOUT_S)
                assert await callee_node.store_due(everything=True) == 1
                held.release.set()
            held.armed = False
    finally:
        held.release.set()
        held.close()
    assert await _edges(db, principal.org_id) == {}
    assert await _stored(db, principal.org_id) == 2
    swept_us = clock.now_us() + (_WAIT_S + 1) * _US
    assert await sweep_pending(db, now_us=swept_us, max_pending=100) == 2
    assert await _edges(db, principal.org_id) == {("checkout", "payments", "calls"): (1, 0)}


@pytest.mark.parametrize(
    ("memory_seconds", "stats_seconds", "every"),
    [(5.0, 1.0, 1.0), (1.0, 1.0, 0.25), (5.0, 0.0, 1.0), (0.0, 0.5, 0.5), (0.2, 0.0, 0.1)],
)
def test_what_is_kept_in_memory_is_stored_as_often_as_its_times_ask(
    db: Database, memory_seconds: float, stats_seconds: float, every: float
) -> None:
    ingestion = TraceIngestion(
        db,
        wait_seconds=_WAIT_S,
        memory_seconds=memory_seconds,
        max_waiting=10,
        stats_seconds=stats_seconds,
    )
    assert ingestion.store_every_seconds == every
