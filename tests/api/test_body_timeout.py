"""A request body that trickles in (a slow-loris body, one byte at a time) is cut off at
TRAILMAP_BODY_TIMEOUT_SECONDS with 408 REQUEST_TIMEOUT, and the connection is closed.

A real `trailmap serve` on 127.0.0.1 and a raw socket: the request's head goes at once, then
one byte of body each time the server has not answered for a moment, as an attacker keeps a
request (and a worker) busy without ever finishing it.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.server import org_with_key, running_server

_TIMEOUT_S = 1.0  # the server's body timeout in these tests
_PACE_S = 0.2  # a byte whenever the server stays silent this long
_GIVE_UP_S = 10.0  # no answer by then: the server waits for the body as long as it trickles
_READ_S = 5.0


@dataclass(frozen=True)
class Server:
    url: str
    key: str


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    after: float  # seconds from the head being sent
    closed: bool  # the server closed the connection after answering


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    key = org_with_key(database_url, "slow")
    env = {"TRAILMAP_BODY_TIMEOUT_SECONDS": str(_TIMEOUT_S)}
    with running_server(database_url, log_path=tmp_path / "server.log", env=env) as url:
        yield Server(url, key)


def _trickle(url: str, head: str, byte: bytes) -> Answer:
    """Send `head`, then `byte` again and again while the server says nothing."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=_READ_S) as sock:
        # The Host header as clients write it (the MCP endpoint checks it).
        sock.sendall(head.replace("{host}", parts.netloc).encode())
        started = time.monotonic()
        while time.monotonic() - started < _GIVE_UP_S:
            # Waiting for the answer, for at most one pace; no answer: one more byte.
            readable, _, _ = select.select([sock], [], [], _PACE_S)
            if readable:
                break
            sock.sendall(byte)
        else:
            pytest.fail(f"no answer within {_GIVE_UP_S:.0f} s while the body trickled in")
        after = time.monotonic() - started
        received = b""
        closed = False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass  # still open after the answer
    head_part, _, body_part = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    assert body_part.startswith(b"{"), received
    return Answer(int(status_line.split()[1]), headers, json.loads(body_part), after, closed)


def _head(path: str, content_type: str, *, key: str | None = None, chunked: bool = False) -> str:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: {host}",
        f"Content-Type: {content_type}",
        "Accept: application/json, text/event-stream",
        "Transfer-Encoding: chunked" if chunked else "Content-Length: 10000",
    ]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    return "\r\n".join(lines) + "\r\n\r\n"


def _assert_cut_off(answer: Answer) -> None:
    assert answer.status == 408, answer
    assert answer.body["success"] is False
    assert answer.body["code"] == "REQUEST_TIMEOUT"
    assert "did not arrive" in answer.body["error"]
    assert answer.headers.get("connection") == "close"
    assert answer.closed, "the connection stayed open after the 408"
    # Cut off at the timeout, give or take a pace and a busy machine; never the whole body.
    assert _TIMEOUT_S <= answer.after < _TIMEOUT_S + 3.0, answer.after


def test_an_event_body_sent_a_byte_at_a_time_is_cut_off_with_408(server: Server) -> None:
    _assert_cut_off(
        _trickle(server.url, _head("/api/v1/events", "application/json", key=server.key), b" ")
    )


def test_a_chunked_body_sent_a_byte_at_a_time_is_cut_off_with_408(server: Server) -> None:
    head = _head("/api/v1/events", "application/json", key=server.key, chunked=True)
    _assert_cut_off(_trickle(server.url, head, b"1\r\n \r\n"))


def test_a_console_form_sent_a_byte_at_a_time_is_cut_off_with_408(server: Server) -> None:
    _assert_cut_off(
        _trickle(server.url, _head("/login", "application/x-www-form-urlencoded"), b"a")
    )


def test_an_mcp_request_sent_a_byte_at_a_time_is_cut_off_with_408(server: Server) -> None:
    _assert_cut_off(_trickle(server.url, _head("/mcp", "application/json", key=server.key), b" "))
