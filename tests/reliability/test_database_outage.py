"""PostgreSQL goes away under load and comes back: Trailmap answers 503 meanwhile and heals.

A `trailmap serve` process runs on a PostgreSQL cluster of the test's own while clients
write and read events without pause. The cluster is stopped (`pg_ctl stop -m fast`, as a
restart or a failover does) for ten seconds (four in the fast form), then started again.
Meanwhile every request is answered, quickly, with `503 UNAVAILABLE` and a `Retry-After`
(no hang, no 500, no reset connection); after it the same process serves again without
being restarted; and `trailmap send`, started during the outage, retries until its event is
stored. Nothing acknowledged before, during or after the outage is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.cluster import PostgresCluster, postgres_cluster
from tests.reliability.forms import scale
from tests.reliability.paging import stored_event_ids
from tests.server import org_with_key, running_server

SOURCE = "//reliability.example/outage"
_OUTAGE_S = scale(4.0, 10.0)
_CLIENTS = 6  # half write, half read
# An answer during the outage must come within this: the connect timeout (5 s) plus margin.
# A hang would show up as the client's own timeout, far beyond it.
_MAX_LATENCY_S = 8.0
_CLIENT_TIMEOUT_S = 60.0
_DEADLINE_S = 90.0
_POLL_S = 0.05


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic()
    latency: float
    status: int  # 0: no HTTP answer at all (reset, refused, timeout)
    code: str | None  # the error code of a non-2xx answer
    retry_after: str | None
    detail: str


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def successes_since(self, moment: float) -> int:
        return sum(1 for a in self.answers if a.started >= moment and 200 <= a.status < 300)

    def during(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.started < end]


@dataclass(frozen=True)
class Setup:
    cluster: PostgresCluster
    url: str
    key: str
    folder: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with postgres_cluster() as cluster:
        database_url = cluster.create_database("outage")
        key = org_with_key(database_url, "outage")
        with running_server(database_url, log_path=tmp_path / "server.log") as url:
            yield Setup(cluster=cluster, url=url, key=key, folder=tmp_path)


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
    """Write (even numbers) or read (odd) until told to stop, noting every answer."""
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=_CLIENT_TIMEOUT_S) as http:
        while not load.stop.is_set():
            name = f"load-{number}-{sent}"
            sent += 1
            started = time.monotonic()
            try:
                if number % 2 == 0:
                    response = await http.post("/api/v1/events", json=_event(name))
                else:
                    response = await http.get(
                        "/api/v1/events", params={"from": "-1h", "source": SOURCE}
                    )
            except httpx.TransportError as error:
                latency = time.monotonic() - started
                load.answers.append(Answer(started, latency, 0, None, None, repr(error)))
                continue
            latency = time.monotonic() - started
            body = response.json()
            code = None if response.is_success else body.get("code")
            retry_after = response.headers.get("retry-after")
            load.answers.append(
                Answer(
                    started, latency, response.status_code, code, retry_after, body.get("error", "")
                )
            )
            if response.is_success and number % 2 == 0:
                load.acknowledged.append(name)
            if not response.is_success:
                # A client that honours Retry-After would wait; this one keeps asking, to
                # measure every answer, but not in a hot loop.
                await asyncio.sleep(0.05)


async def _wait_for(condition: Any, what: str, deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(_POLL_S)  # polling a condition, bounded by the deadline


def _send(setup: Setup, event_id: str) -> subprocess.Popen[bytes]:
    """`trailmap send` as a person or a CI job runs it, from the environment."""
    environment = {
        **os.environ,
        "TRAILMAP_URL": setup.url,
        "TRAILMAP_API_KEY": setup.key,
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "trailmap.cli.main",
        "send",
        "--type",
        "deployment",
        "--source",
        SOURCE,
        "--subject",
        "production",
        "--id",
        event_id,
        "--description",
        "sent while the database was down",
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )


@dataclass(frozen=True)
class Timeline:
    stopping: float  # pg_ctl stop called
    down: float  # PostgreSQL is down (pg_ctl stop returned)
    up: float  # pg_ctl start called
    accepting: float  # PostgreSQL accepts connections again (pg_ctl start returned)
    recovered: float  # the first request that succeeded after, answered


async def _outage_under_load(setup: Setup, load: Load, send_id: str) -> tuple[Timeline, str]:
    clients = [asyncio.create_task(_client(setup.url, setup.key, n, load)) for n in range(_CLIENTS)]
    sender: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + _DEADLINE_S
        begun = time.monotonic()
        await _wait_for(lambda: load.successes_since(begun) >= 20, "the load to run", deadline)

        stopping = time.monotonic()
        await asyncio.to_thread(setup.cluster.stop)
        down = time.monotonic()
        sender = _send(setup, send_id)
        outage_ends = stopping + _OUTAGE_S
        await _wait_for(
            lambda: time.monotonic() >= outage_ends,
            "the outage to last its time",
            deadline,
        )
        up = time.monotonic()
        await asyncio.to_thread(setup.cluster.start)
        accepting = time.monotonic()
        await _wait_for(lambda: load.successes_since(up) >= 20, "requests to succeed", deadline)
        recovered = min(
            a.started + a.latency for a in load.answers if a.started >= up and 200 <= a.status < 300
        )
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=_CLIENT_TIMEOUT_S)
        _out, err = await asyncio.to_thread(sender.communicate, timeout=_DEADLINE_S)
        assert sender.returncode == 0, err.decode(errors="replace")
        timeline = Timeline(stopping, down, up, accepting, recovered)
        return timeline, err.decode(errors="replace")
    finally:
        load.stop.set()
        for task in clients:
            task.cancel()
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait()


def test_a_database_outage_gets_quick_503s_heals_by_itself_and_loses_nothing_sent(
    setup: Setup,
) -> None:
    load = Load()
    send_id = "sent-during-the-outage"
    timeline, send_log = asyncio.run(_outage_under_load(setup, load, send_id))

    during = load.during(timeline.down, timeline.up)
    statuses = Counter(a.status for a in during)
    worst = max(a.latency for a in during)
    failures = [a for a in load.answers if not 200 <= a.status < 300]
    print(
        f"\ndatabase outage of {timeline.up - timeline.stopping:.1f} s "
        f"(pg_ctl stop took {timeline.down - timeline.stopping:.2f} s, "
        f"start {timeline.accepting - timeline.up:.2f} s): "
        f"{len(during)} requests during it, by status {dict(sorted(statuses.items()))}; "
        f"max latency {worst * 1000:.0f} ms "
        f"(p50 {sorted(a.latency for a in during)[len(during) // 2] * 1000:.0f} ms); "
        f"first success answered {timeline.recovered - timeline.up:.2f} s after pg_ctl start "
        f"was called, {timeline.recovered - timeline.accepting:+.2f} s from its return; "
        f"{len(load.answers)} requests in all; "
        f"trailmap send retried {send_log.count('retrying')} times"
    )
    # Every answer is an HTTP answer: nothing reset, refused or left hanging.
    assert statuses[0] == 0, [a.detail for a in during if a.status == 0][:3]
    # Failures are 503 UNAVAILABLE with a Retry-After, never a 500.
    assert {a.status for a in failures} <= {503}, [(a.status, a.detail) for a in failures][:3]
    assert {a.code for a in failures} <= {"UNAVAILABLE"}
    assert all(a.retry_after and a.retry_after.isdigit() for a in failures)
    # While PostgreSQL was down, every request got its 503 (none was answered from memory).
    assert set(statuses) == {503}, statuses
    assert worst < _MAX_LATENCY_S, f"an answer took {worst:.1f} s during the outage"

    # After recovery: everything acknowledged is there, once, and so is the CLI's event.
    stored = stored_event_ids(setup.key, SOURCE, itertools.repeat(setup.url))
    assert len(stored) == len(set(stored))
    assert set(load.acknowledged) <= set(stored)
    assert send_id in stored
    assert "retrying" in send_log, "trailmap send never met the outage"
