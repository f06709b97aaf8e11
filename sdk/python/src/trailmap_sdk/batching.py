"""Events queued and sent in batches in the background: a bounded queue, flushed when a batch
fills, every `flush_interval` seconds, on `flush()` and on `close()`.

When the queue is full, `add` waits up to `block` seconds (0 by default: not at all) and
then drops the event and counts it in `stats.dropped`: an application never stalls because
Trailmap is slow or away, and what it lost is counted, not hidden.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from trailmap_sdk.errors import TrailmapError
from trailmap_sdk.events import Event, event_json
from trailmap_sdk.results import SendResult
from trailmap_sdk.wire import MAX_BATCH

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trailmap_sdk.client import AsyncTrailmap, Trailmap

__all__ = ["AsyncBatcher", "Batcher", "BatcherStats"]

log = logging.getLogger("trailmap_sdk")

OnError = Callable[[TrailmapError, list[dict[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Events so far: `accepted`, `duplicates`, `rejected` by the server; `failed` (every
    retry failed, or the request was refused); `dropped` (the queue was full); `queued` now."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted = self.duplicates = self.rejected = self.failed = self.dropped = 0

    def sent(self, result: SendResult) -> None:
        with self.lock:
            self.accepted += len(result.accepted)
            self.duplicates += len(result.duplicates)
            self.rejected += len(result.rejected)
        for rejected in result.rejected:
            log.warning("Trailmap rejected an event: %s %s", rejected.code, rejected.message)

    def lost(self, error: TrailmapError, count: int) -> None:
        with self.lock:
            self.failed += count
        log.warning("could not send %d events to Trailmap: %s", count, error)

    def drop(self) -> None:
        with self.lock:
            self.dropped += 1
            first = self.dropped == 1
        if first:
            log.warning("the Trailmap queue is full: events are dropped (see stats.dropped)")

    def snapshot(self, queued: int) -> BatcherStats:
        with self.lock:
            return BatcherStats(
                self.accepted, self.duplicates, self.rejected, self.failed, self.dropped, queued
            )


def _check(max_batch: int, flush_interval: float, max_queue: int) -> None:
    if not 1 <= max_batch <= MAX_BATCH:
        raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
    if flush_interval <= 0:
        raise ValueError("flush_interval must be positive")
    if max_queue < max_batch:
        raise ValueError("max_queue must hold at least one batch")


class Batcher:
    """`with Batcher(client) as batch: batch.add(event)`: sent from a background thread.

    `add` fixes the event's id and time at once, so an event retried later is still the same
    event. `close()` (or leaving the `with`) sends what is queued, waiting for it; so does
    the interpreter's exit, for a batcher never closed.
    `on_error(error, events)` hears of each batch that could not be sent.
    """

    def __init__(
        self,
        client: Trailmap,
        *,
        max_batch: int = 100,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        block: float = 0.0,
        on_error: OnError | None = None,
    ) -> None:
        _check(max_batch, flush_interval, max_queue)
        self._client = client
        self._max_batch = max_batch
        self._interval = flush_interval
        self._block = block
        self._on_error = on_error
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._counts = _Counts()
        self._sending = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="trailmap-batcher", daemon=True)
        self._thread.start()
        # A batcher never closed (an application's, made at import) still sends its queue when
        # the interpreter exits; a weak reference, so that registering keeps nothing alive.
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def stats(self) -> BatcherStats:
        return self._counts.snapshot(self._queue.qsize())

    def add(self, event: Event | Mapping[str, Any]) -> bool:
        """Queue an event; False when it was dropped (the queue stayed full for `block` s)."""
        if self._closed:
            raise TrailmapError("the batcher is closed")
        body = event_json(event)
        try:
            self._queue.put(body, block=self._block > 0, timeout=self._block or None)
        except queue.Full:
            self._counts.drop()
            return False
        if self._queue.qsize() >= self._max_batch:
            self._wake.set()
        return True

    def flush(self) -> None:
        """Send everything queued now, in this thread, and return when it is sent or lost."""
        self._drain()

    def close(self, timeout: float | None = None) -> None:
        """Stop the background thread and send what is left (waiting up to `timeout` s for a
        batch in flight first)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._drain()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        with self._sending:
            while batch := self._take():
                try:
                    self._counts.sent(self._client.send_many(batch))
                except TrailmapError as error:
                    self._counts.lost(error, len(batch))
                    if self._on_error is not None:
                        self._on_error(error, batch)

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        with contextlib.suppress(queue.Empty):
            while len(batch) < self._max_batch:
                batch.append(self._queue.get_nowait())
        return batch


def _close_at_exit(batcher: weakref.ref[Batcher]) -> None:
    alive = batcher()
    if alive is not None:
        alive.close()


class AsyncBatcher:
    """`Batcher` for asyncio: `async with AsyncBatcher(client) as batch: batch.add(event)`.

    `add` never waits: when the queue is full the event is dropped and counted. The flush
    runs as a task on the running loop, started by `async with` or the first `add`.
    """

    def __init__(
        self,
        client: AsyncTrailmap,
        *,
        max_batch: int = 100,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        on_error: OnError | None = None,
    ) -> None:
        _check(max_batch, flush_interval, max_queue)
        self._client = client
        self._max_batch = max_batch
        self._interval = flush_interval
        self._on_error = on_error
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max_queue)
        self._counts = _Counts()
        self._sending = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stopping = False

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def stats(self) -> BatcherStats:
        return self._counts.snapshot(self._queue.qsize())

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, event: Event | Mapping[str, Any]) -> bool:
        """Queue an event; False when the queue was full and it was dropped."""
        if self._closed:
            raise TrailmapError("the batcher is closed")
        self._start()
        try:
            self._queue.put_nowait(event_json(event))
        except asyncio.QueueFull:
            self._counts.drop()
            return False
        if self._queue.qsize() >= self._max_batch:
            self._wake.set()
        return True

    async def flush(self) -> None:
        """Send everything queued now, and return when it is sent or lost."""
        await self._drain()

    async def aclose(self) -> None:
        """Stop the flush task and send what is left."""
        if self._closed:
            return
        self._closed = True
        # Not cancelled: a batch in flight would be lost. The task ends after its drain.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._drain()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self._drain()

    async def _drain(self) -> None:
        async with self._sending:
            while batch := self._take():
                try:
                    self._counts.sent(await self._client.send_many(batch))
                except TrailmapError as error:
                    self._counts.lost(error, len(batch))
                    if self._on_error is not None:
                        self._on_error(error, batch)

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        with contextlib.suppress(asyncio.QueueEmpty):
            while len(batch) < self._max_batch:
                batch.append(self._queue.get_nowait())
        return batch
