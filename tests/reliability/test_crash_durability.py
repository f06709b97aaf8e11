"""`kill -9` of the server in the middle of sustained ingestion loses nothing it acknowledged.

Several clients POST events with ids of their own, singly and in batches, as fast as the
server takes them, and note every id a 2xx answer acknowledged. The server process is killed
with SIGKILL mid-stream (no shutdown, no flush), started again on the same database, and
asked for everything: each acknowledged id is there, and no id is there twice. Requests that
were in flight at the kill may or may not have been stored; either is correct, and the
figures say how many were. On SQLite and on a PostgreSQL cluster of the test's own (the
kill hits Trailmap's process, never PostgreSQL's).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import databases
from tests.reliability.cluster import postgres_cluster
from tests.reliability.forms import scale
from tests.reliability.paging import stored_event_ids
from tests.server import free_port, org_with_key, stop, wait_until_ready

SOURCE = "//reliability.example/crash"
# Clients and their batch sizes: single events and batches, so both paths are killed mid-way.
_BATCH_SIZES = (1, 1, 5, 20, 50, 100)
# Kill once this many events were acknowledged (and at least this long into the stream).
_ACKNOWLEDGED_BEFORE_KILL = int(scale(600, 20_000))
_STREAM_BEFORE_KILL_S = scale(1.0, 20.0)
_DEADLINE_S = 120.0


@dataclass
class Ledger:
    """What the clients know: acknowledged ids, ids whose request was in flight at the kill."""

    acknowledged: list[str] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)
    requests: int = 0
    refused: list[str] = field(default_factory=list)  # any non-2xx answer: should not happen


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    url: str


@contextmanager
def serving(database_url: str, log_path: Path) -> Iterator[Server]:
    """`trailmap serve` as tests/server.py runs it, but with its process in hand to kill."""
    port = free_port()
    environment = {
        **os.environ,
        "TRAILMAP_RETENTION_PURGE_INTERVAL_SECONDS": "0",
        "TRAILMAP_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    environment.pop("TRAILMAP_DATABASE_URL", None)
    command = [
        sys.executable,
        "-m",
        "trailmap.cli.main",
        "--database",
        database_url,
        "serve",
        "--port",
        str(port),
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(process, url, log_path)
            yield Server(process, url)
        finally:
            stop(process)


@pytest.fixture(params=["sqlite", "postgres"])
def crash_database(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    if request.param == "sqlite":
        yield databases.copy_sqlite(sqlite_template, tmp_path / "trailmap.db")
        return
    with postgres_cluster() as cluster:
        yield cluster.create_database("crash")


def _events(client: int, start: int, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "specversion": "1.0",
            "id": f"c{client}-{n}",
            "type": "deployment",
            "source": SOURCE,
            "subject": "production",
            "time": now,
        }
        for n in range(start, start + count)
    ]


async def _ingest(
    url: str, key: str, client: int, batch: int, ledger: Ledger, killed: asyncio.Event
) -> None:
    """POST until the server is gone; note what was acknowledged and what was in flight."""
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as http:
        while True:
            events = _events(client, sent, batch)
            sent += batch
            ids = {e["id"] for e in events}
            body: Any = events if batch > 1 else events[0]
            ledger.in_flight |= ids
            try:
                response = await http.post("/api/v1/events", json=body)
            except httpx.TransportError:
                if killed.is_set():
                    return  # the kill: these ids stay in flight
                raise
            ledger.in_flight -= ids
            ledger.requests += 1
            if not response.is_success:
                ledger.refused.append(f"{response.status_code} {response.text[:200]}")
                continue
            data = response.json()["data"]
            # Acknowledged = stored now or stored before (a duplicate): stored either way.
            ledger.acknowledged += [item["event_id"] for item in data["accepted"]]
            ledger.acknowledged += [item["event_id"] for item in data["duplicates"]]


async def _stream_and_kill(server: Server, key: str) -> Ledger:
    ledger = Ledger()
    killed = asyncio.Event()
    clients = [
        asyncio.create_task(_ingest(server.url, key, i, size, ledger, killed))
        for i, size in enumerate(_BATCH_SIZES)
    ]
    try:
        started = time.monotonic()
        deadline = started + _DEADLINE_S
        while (
            len(ledger.acknowledged) < _ACKNOWLEDGED_BEFORE_KILL
            or time.monotonic() - started < _STREAM_BEFORE_KILL_S
        ):
            assert time.monotonic() < deadline, f"only {len(ledger.acknowledged)} acknowledged"
            for task in clients:
                if task.done():
                    task.result()  # a client that died before the kill: show why
            await asyncio.sleep(0.02)  # polling the clients' progress, bounded by the deadline
        killed.set()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
    finally:
        for task in clients:
            task.cancel()
    return ledger


def test_every_event_acknowledged_before_a_kill_9_is_there_once_after_a_restart(
    crash_database: str, tmp_path: Path
) -> None:
    key = org_with_key(crash_database, "crash")
    log = tmp_path / "server.log"
    with serving(crash_database, log) as server:
        ledger = asyncio.run(_stream_and_kill(server, key))
    assert not ledger.refused, ledger.refused[:5]
    with serving(crash_database, log) as restarted:
        found = stored_event_ids(key, SOURCE, itertools.repeat(restarted.url))

    acknowledged = set(ledger.acknowledged)
    stored = set(found)
    backend = "SQLite" if crash_database.startswith("sqlite") else "PostgreSQL"
    print(
        f"\ncrash durability ({backend}): {ledger.requests} requests answered, "
        f"{len(acknowledged)} events acknowledged, {len(ledger.in_flight)} in flight at the "
        f"kill ({len(ledger.in_flight & stored)} of them stored), {len(found)} found after "
        f"restart, {len(found) - len(stored)} found twice, "
        f"{len(acknowledged - stored)} acknowledged but missing"
    )
    assert len(ledger.acknowledged) == len(acknowledged), "the server acknowledged an id twice"
    assert acknowledged - stored == set(), "acknowledged events were lost"
    assert len(found) == len(stored), "an event is stored twice"
    # Nothing appeared that was not sent: what is there was acknowledged or in flight.
    assert stored <= acknowledged | ledger.in_flight
