"""What the SDK and Action tests share: the live server's address and key, its stored
events, and a loopback stand-in that answers as told (429, 503) before it forwards."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = ["Answer", "LiveServer", "StandIn", "new_source", "stand_in", "wait_for"]


@dataclass(frozen=True)
class LiveServer:
    url: str
    token: str  # READ_WRITE
    database_url: str = ""  # the server's database, for what only an operator makes

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def events_from(self, source: str) -> list[dict[str, Any]]:
        """Every event of `source` in the last two hours, newest first, with its data."""
        response = httpx.get(
            f"{self.url}/api/v1/events",
            params={"from": "-2h", "source": source, "limit": 100},
            headers=self.auth(),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        listed: list[dict[str, Any]] = response.json()["data"]["events"]
        return [self.event(e["trailmap_id"]) for e in listed]

    def event(self, trailmap_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/v1/events/{trailmap_id}", headers=self.auth(), timeout=10
        )
        assert response.status_code == 200, response.text
        event: dict[str, Any] = response.json()["data"]
        return event


def new_source() -> str:
    """A source of its own per test, so tests sharing the server never see each other."""
    return f"//github.com/acme/api-{uuid.uuid4().hex[:8]}"


def wait_for(condition: Any, *, timeout: float = 10.0) -> None:
    """Until `condition()` is true, or fail after `timeout` s (a background flush's result)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s")
        time.sleep(0.01)  # polling what another thread does, bounded by the deadline


@dataclass(frozen=True)
class Answer:
    """What the stand-in says instead of forwarding: a status and its headers. With
    `land_first` the request is forwarded first (stored) and the answer lost on the way."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    land_first: bool = False


@dataclass
class StandIn:
    url: str
    script: list[Answer]
    requests: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self, body: bytes, headers: dict[str, str]) -> Answer | None:
        with self.lock:
            self.requests.append({"body": json.loads(body or b"null"), "headers": headers})
            self.times.append(time.monotonic())
            position = len(self.requests) - 1
            return self.script[position] if position < len(self.script) else None

    @property
    def bodies(self) -> list[Any]:
        with self.lock:
            return [r["body"] for r in self.requests]


_CODES = {429: "QUOTA_EXCEEDED", 503: "UNAVAILABLE"}


@contextmanager
def stand_in(upstream: str, script: list[Answer], *, hold: bool = False) -> Iterator[StandIn]:
    """A loopback HTTP server in front of `upstream`: the n-th POST gets `script[n]` (in the
    server's one error shape), and every POST after the script is forwarded. With `hold`,
    each POST waits until `release` is set."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {
                name: value
                for name in ("Authorization", "Content-Type", "User-Agent")
                if (value := self.headers.get(name)) is not None
            }
            answer = state.next_answer(body, headers)
            if hold:
                state.release.wait(timeout=30)
            if answer is None or answer.land_first:
                forwarded = httpx.post(
                    upstream + self.path, content=body, headers=headers, timeout=10
                )
                if answer is None:
                    self._answer(forwarded.status_code, forwarded.content, {})
                    return
            code = _CODES.get(answer.status, "UNAVAILABLE")
            error = {"success": False, "error": "try again shortly", "code": code, "details": []}
            self._answer(answer.status, json.dumps(error).encode(), answer.headers)

        def _answer(self, status: int, payload: bytes, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            """Quiet: the tests assert on what the stand-in recorded."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = StandIn(url=f"http://127.0.0.1:{server.server_address[1]}", script=script)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
