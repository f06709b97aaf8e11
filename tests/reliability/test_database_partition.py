"""A network partition between Trailmap and PostgreSQL: every request still gets an answer,
503 with Retry-After within the call timeout, and the same process serves again once the
network heals.

A `trailmap serve` process reaches a PostgreSQL cluster of the test's own through a TCP
proxy on 127.0.0.1 that the test controls. While clients write events, read them and probe
`/readyz` without pause, the proxy stops passing bytes both ways without closing a socket
(a black hole, as a partition looks: no refusal, no reset, just silence) for eight seconds
(25 in the full form, the partition that once hung every request for its whole length), then
passes them again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.cluster import postgres_cluster
from tests.reliability.forms import scale
from tests.reliability.paging import stored_event_ids
from tests.server import org_with_key, running_server
from tests.tcp_proxy import TcpProxy, port_of, through

SOURCE = "//reliability.example/partition"
_PARTITION_S = scale(8.0, 25.0)
_CALL_TIMEOUT_S = 2.0  # TRAILMAP_DB_CALL_TIMEOUT_SECONDS for the server under test
# Each answer during the partition comes within the call timeout plus a busy machine's lag;
# a hang would last the partition, far beyond it.
_MAX_LATENCY_S = _CALL_TIMEOUT_S + 3.0
_CLIENT_TIMEOUT_S = 60.0
_DEADLINE_S = 120.0
_POLL_S = 0.05
_KINDS = ("write", "read", "write", "read", "readyz")


@dataclass(frozen=True)
class Answer:
    kind: str
    started: float  # time.monotonic()
    latency: float
    status: int  # 0: no HTTP answer at all (reset, refused, timeout)
    code: str | None
    retry_after: str | None
    detail: str

    @property
    def answered(self) -> float:
        return self.started + self.latency


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def successes_since(self, moment: float) -> int:
        return sum(1 for a in self.answers if a.started >= moment and 200 <= a.status < 300)


@dataclass(frozen=True)
class Setup:
    proxy: TcpProxy
    url: str
    key: str


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with postgres_cluster() as cluster:
        database_url = cluster.create_database("partition")
        key = org_with_key(database_url, "partition")
        env = {
            "TRAILMAP_DB_CALL_TIMEOUT_SECONDS": str(_CALL_TIMEOUT_S),
            "TRAILMAP_DB_STATEMENT_TIMEOUT_MS": "1500",
            "TRAILMAP_DB_POOL_TIMEOUT_SECONDS": "1",
        }
        with (
            TcpProxy(port_of(database_url)) as proxy,
            running_server(
                through(database_url, proxy.port), log_path=tmp_path / "server.log", env=env
            ) as url,
        ):
            yield Setup(proxy=proxy, url=url, key=key)


def _event(name: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": name,
        "type": "deployment",
        "source": SOURCE,
        "subject": "production",
        "time": datetime.now(UTC).isoformat(),
    }


async def _client(url: str, key: str, number: int, load: Load) -> None:
    """Ask without pause, as clients of one kind do, noting every answer."""
    kind = _KINDS[number % len(_KINDS)]
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=_CLIENT_TIMEOUT_S) as http:
        while not load.stop.is_set():
            name = f"load-{number}-{sent}"
            sent += 1
            started = time.monotonic()
            try:
                if kind == "write":
                    response = await http.post("/api/v1/events", json=_event(name))
                elif kind == "read":
                    response = await http.get(
                        "/api/v1/events", params={"from": "-1h", "source": SOURCE}
                    )
                else:
                    response = await http.get("/readyz")
            except httpx.TransportError as error:
                latency = time.monotonic() - started
                load.answers.append(Answer(kind, started, latency, 0, None, None, repr(error)))
                continue
            latency = time.monotonic() - started
            body = response.json()
            load.answers.append(
                Answer(
                    kind,
                    started,
                    latency,
                    response.status_code,
                    None if response.is_success else body.get("code"),
                    response.headers.get("retry-after"),
                    body.get("error", ""),
                )
            )
            if response.is_success and kind == "write":
                load.acknowledged.append(name)
            if not response.is_success:
                await asyncio.sleep(0.05)  # keeps asking, but not in a hot loop


async def _wait_for(condition: Any, what: str, deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(_POLL_S)  # polling a condition, bounded by the deadline


@dataclass(frozen=True)
class Timeline:
    cut: float  # the proxy stopped passing bytes
    healed: float  # it passes them again
    recovered: float  # the first request that succeeded after the heal, answered


async def _partition_under_load(setup: Setup, load: Load) -> Timeline:
    clients = [
        asyncio.create_task(_client(setup.url, setup.key, n, load)) for n in range(len(_KINDS))
    ]
    try:
        deadline = time.monotonic() + _DEADLINE_S
        begun = time.monotonic()
        await _wait_for(lambda: load.successes_since(begun) >= 20, "the load to run", deadline)
        await asyncio.to_thread(setup.proxy.partition)
        cut = time.monotonic()
        ends = cut + _PARTITION_S
        await _wait_for(lambda: time.monotonic() >= ends, "the partition to last", deadline)
        await asyncio.to_thread(setup.proxy.heal)
        healed = time.monotonic()
        await _wait_for(lambda: load.successes_since(healed) >= 20, "requests to succeed", deadline)
        recovered = min(
            a.answered for a in load.answers if a.started >= healed and 200 <= a.status < 300
        )
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=_CLIENT_TIMEOUT_S)
        return Timeline(cut, healed, recovered)
    finally:
        load.stop.set()
        for task in clients:
            task.cancel()


def test_a_network_partition_gets_503s_within_the_call_timeout_and_heals_by_itself(
    setup: Setup,
) -> None:
    load = Load()
    timeline = asyncio.run(_partition_under_load(setup, load))

    # In flight at the cut, or asked while it lasted.
    during = [a for a in load.answers if a.answered > timeline.cut and a.started < timeline.healed]
    # Asked early enough that the heal cannot have saved them: each must be a 503.
    surely_cut = [a for a in during if timeline.cut <= a.started < timeline.healed - _MAX_LATENCY_S]
    statuses = Counter((a.kind, a.status) for a in during)
    latencies = sorted(a.latency for a in during)
    worst = max(during, key=lambda a: a.latency)
    print(
        f"\npartition of {timeline.healed - timeline.cut:.1f} s: {len(during)} requests "
        f"answered during it, by kind and status {dict(sorted(statuses.items()))}; "
        f"max latency {worst.latency * 1000:.0f} ms ({worst.kind}), "
        f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms; "
        f"first success answered {timeline.recovered - timeline.healed:.2f} s after the heal; "
        f"{len(load.answers)} requests in all, {len(load.acknowledged)} events acknowledged"
    )
    # Every answer is an HTTP answer: nothing reset, refused or left hanging.
    assert all(a.status != 0 for a in load.answers), [
        a.detail for a in load.answers if a.status == 0
    ][:3]
    # Each within the bound: the call timeout, not the length of the partition.
    assert worst.latency < _MAX_LATENCY_S, worst
    # While the network was cut, every kind of request got 503 UNAVAILABLE with Retry-After.
    assert {a.kind for a in surely_cut} == set(_KINDS)
    assert {(a.status, a.code) for a in surely_cut} == {(503, "UNAVAILABLE")}, surely_cut[:3]
    failures = [a for a in load.answers if not 200 <= a.status < 300]
    assert {a.status for a in failures} <= {503}, [(a.status, a.detail) for a in failures][:3]
    assert all(a.retry_after and a.retry_after.isdigit() for a in failures)
    # After the heal the same process serves every kind again.
    after = {a.kind for a in load.answers if a.started >= timeline.healed and a.status == 200}
    after |= {a.kind for a in load.answers if a.started >= timeline.healed and a.status == 201}
    assert after == set(_KINDS)

    # Everything acknowledged is stored, once.
    stored = stored_event_ids(setup.key, SOURCE, itertools.repeat(setup.url))
    assert len(stored) == len(set(stored))
    assert set(load.acknowledged) <= set(stored)
