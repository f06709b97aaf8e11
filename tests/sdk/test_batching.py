"""`Batcher` and `AsyncBatcher`: flushed when a batch fills, on the interval and on close;
a full queue drops and counts."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.sdk.support import Answer, LiveServer, new_source, stand_in, wait_for
from trailmap_sdk import AsyncBatcher, AsyncTrailmap, Batcher, Event, RetryPolicy, Trailmap

# An interval no test waits for: a flush seen within a test came from the size or the close.
_NEVER = 3600.0


def test_a_full_batch_is_sent_at_once_in_one_request(live: LiveServer) -> None:
    source = new_source()
    with (
        stand_in(live.url, []) as proxy,
        Trailmap(proxy.url, live.token) as client,
        Batcher(client, max_batch=5, flush_interval=_NEVER) as batch,
    ):
        for n in range(5):
            assert batch.add(Event(type="deployment", source=source, id=f"d{n}"))
        wait_for(lambda: batch.stats.accepted == 5)
        assert len(proxy.requests) == 1
        assert [e["id"] for e in proxy.bodies[0]] == [f"d{n}" for n in range(5)]
    assert len(live.events_from(source)) == 5


def test_a_partial_batch_is_sent_when_the_interval_passes(live: LiveServer) -> None:
    source = new_source()
    with (
        Trailmap(live.url, live.token) as client,
        Batcher(client, max_batch=100, flush_interval=0.05) as batch,
    ):
        batch.add(Event(type="feature-flag", source=source))
        wait_for(lambda: batch.stats.accepted == 1)
        assert batch.stats.queued == 0
    assert len(live.events_from(source)) == 1


def test_closing_sends_what_is_queued(live: LiveServer) -> None:
    source = new_source()
    with Trailmap(live.url, live.token) as client:
        batch = Batcher(client, max_batch=100, flush_interval=_NEVER)
        for _ in range(3):
            batch.add(Event(type="config-change", source=source))
        assert live.events_from(source) == []
        batch.close()
        assert batch.stats.accepted == 3
        with pytest.raises(Exception, match="closed"):
            batch.add(Event(type="config-change", source=source))
    assert len(live.events_from(source)) == 3


def test_flush_sends_now_and_counts_rejections(live: LiveServer) -> None:
    source = new_source()
    with (
        Trailmap(live.url, live.token) as client,
        Batcher(client, flush_interval=_NEVER) as batch,
    ):
        batch.add(Event(type="deployment", source=source))
        batch.add({"type": "deployment", "source": source, "time": "2026-01-01T00:00:00"})
        batch.flush()
        assert (batch.stats.accepted, batch.stats.rejected) == (1, 1)


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_caller(live: LiveServer) -> None:
    source = new_source()
    with stand_in(live.url, [], hold=True) as proxy, Trailmap(proxy.url, live.token) as client:
        batch = Batcher(client, max_batch=2, max_queue=2, flush_interval=_NEVER)
        batch.add(Event(type="deployment", source=source))
        batch.add(Event(type="deployment", source=source))  # a full batch: the flush starts
        wait_for(lambda: len(proxy.requests) == 1)  # ... and hangs in the stand-in
        assert batch.add(Event(type="deployment", source=source))
        assert batch.add(Event(type="deployment", source=source))
        assert not batch.add(Event(type="deployment", source=source))
        assert batch.stats.dropped == 1
        proxy.release.set()
        batch.close()
        assert batch.stats.accepted == 4
    assert len(live.events_from(source)) == 4


def test_a_batch_that_cannot_be_sent_is_counted_and_handed_to_on_error(
    live: LiveServer,
) -> None:
    lost: list[tuple[str, int]] = []
    policy = RetryPolicy(max_retries=1, base_delay=0.0)
    with (
        stand_in(live.url, [Answer(503)] * 2) as proxy,
        Trailmap(proxy.url, live.token, retry=policy) as client,
        Batcher(
            client,
            flush_interval=_NEVER,
            on_error=lambda error, events: lost.append((type(error).__name__, len(events))),
        ) as batch,
    ):
        batch.add(Event(type="deployment", source=new_source()))
        batch.flush()
        assert batch.stats.failed == 1
    assert lost == [("RetriesExhausted", 1)]


@pytest.mark.anyio
async def test_the_async_batcher_flushes_on_size_on_the_interval_and_on_close(
    live: LiveServer,
) -> None:
    source = new_source()
    async with AsyncTrailmap(live.url, live.token) as client:
        async with AsyncBatcher(client, max_batch=3, flush_interval=_NEVER) as batch:
            for _ in range(3):
                batch.add(Event(type="deployment", source=source))
            for _ in range(200):
                if batch.stats.accepted == 3:
                    break
                await asyncio.sleep(0.01)  # waiting on the flush task, bounded
            assert batch.stats.accepted == 3
            batch.add(Event(type="rollback", source=source))
        assert batch.stats.accepted == 4

        timed = AsyncBatcher(client, flush_interval=0.05)
        timed.add(Event(type="incident", source=source))
        for _ in range(200):
            if timed.stats.accepted == 1:
                break
            await asyncio.sleep(0.01)
        assert timed.stats.accepted == 1
        await timed.aclose()
    assert sorted(e["type"] for e in live.events_from(source)) == [
        "deployment",
        "deployment",
        "deployment",
        "incident",
        "rollback",
    ]


def test_a_batcher_never_closed_sends_its_queue_when_the_program_exits(live: LiveServer) -> None:
    source = new_source()
    program = (
        "import sys\n"
        "from trailmap_sdk import Batcher, Event, Trailmap\n"
        "client = Trailmap(sys.argv[1], sys.argv[2])\n"
        "batch = Batcher(client, flush_interval=3600)\n"
        "batch.add(Event(type='deployment', source=sys.argv[3]))\n"
    )
    subprocess.run(
        [sys.executable, "-c", program, live.url, live.token, source],
        check=True,
        timeout=60,
    )
    assert len(live.events_from(source)) == 1
