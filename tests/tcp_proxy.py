"""A TCP proxy on 127.0.0.1 that a test controls, in a thread of its own: between Trailmap and
its PostgreSQL, it makes the database unreachable or partitioned without touching the server.

    with TcpProxy(5432) as proxy:          # 127.0.0.1:proxy.port -> 127.0.0.1:5432
        proxy.partition()                  # a black hole: no byte passes either way, and no
        ...                                # socket is closed, as a network partition looks
        proxy.heal()                       # bytes flow again, held ones first

Bytes read while partitioned are held, and delivered after `heal()` (as TCP retransmits once
a partition ends); connections accepted meanwhile wait to be connected onward.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.server import free_port

__all__ = ["TcpProxy", "port_of", "through"]

T = TypeVar("T")
_CHUNK = 64 * 1024
_CONTROL_TIMEOUT_S = 10.0


def port_of(url: str) -> int:
    """The port of a database URL (5432 when it names none)."""
    return urlsplit(url).port or 5432


def through(url: str, proxy_port: int) -> str:
    """`url` (on 127.0.0.1) with its port replaced by the proxy's."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", "the proxy forwards to 127.0.0.1 only"
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{proxy_port}").geturl()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port` while entered."""

    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port if port is not None else free_port()
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_CONTROL_TIMEOUT_S)
            self._loop.close()

    def partition(self) -> None:
        """Stop forwarding, both ways, on every connection; close nothing."""
        self._call(self._set_flowing(on=False))

    def heal(self) -> None:
        self._call(self._set_flowing(on=True))

    # -- inside the proxy's thread ---------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_CONTROL_TIMEOUT_S)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)

    async def _set_flowing(self, *, on: bool) -> None:
        assert self._flowing is not None
        if on:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accepted(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        assert self._flowing is not None
        self.connections += 1
        self._writers.add(client_w)
        try:
            # A connection made during a partition reaches nothing until it heals.
            await self._flowing.wait()
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except (OSError, asyncio.CancelledError):
            client_w.close()
            self._writers.discard(client_w)
            return
        self._writers.add(server_w)
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pump(reader, writer, (client_w, server_w)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        both: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                # What arrived as the partition began is held until it heals, not passed on.
                await self._flowing.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # One side closed: close the other, as a plain TCP path would pass the FIN on.
            for each in both:
                each.close()
                self._writers.discard(each)
