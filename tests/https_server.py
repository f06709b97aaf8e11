"""A real https server on loopback for tests, in a thread, with a certificate from a
throwaway CA (trustme). Each path answers as the test arranged (a document, a redirect, an
oversized or slow body, an error), and the server records what it was asked.

    with https_server(tmp_path) as server:
        url = server.serve("/client.json", Reply(b"{...}"))
        ... server.ca_file, server.requests ...
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import trustme

__all__ = ["HttpsServer", "Reply", "https_server"]

Server = TypeVar("Server", bound="HttpsServer")


@dataclass
class Reply:
    """What the server answers on one path."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    content_length: bool = True  # without it, the body ends when the connection closes
    wait_before_headers: float = 0.0  # seconds (cut short when the test ends)
    wait_inside_body: float = 0.0  # seconds after the headers and the body's first byte


@dataclass
class HttpsServer:
    """The running server: where it is, what it answers, and what it was asked."""

    address: str  # the address `localhost` resolves to first, which the server listens on
    ca_file: str
    port: int = 0
    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # paths, in order
    hosts: list[str | None] = field(default_factory=list)  # Host headers, in order
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI, per handshake
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def origin(self) -> str:
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{literal}:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def serve(self, path: str, reply: Reply) -> str:
        self.replies[path] = reply
        return self.url(path)

    def serve_json(self, path: str, document: object, *, url: str | None = None) -> str:
        self.serve(path, Reply(json.dumps(document).encode()))
        return url or self.url(path)


class _TLSServer(ThreadingHTTPServer):
    """An HTTPS server; the TLS handshake happens in the connection's own thread."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext,
        family: socket.AddressFamily,
    ) -> None:
        self.address_family = family
        self.context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, client_address = super().get_request()
        wrapped = self.context.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, client_address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients here hang up on purpose (distrust, time limits, size limits)."""


def _handler(site: HttpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a connection that says nothing does not hold its thread for long

        def setup(self) -> None:
            connection = self.request
            assert isinstance(connection, ssl.SSLSocket)
            connection.settimeout(self.timeout)
            connection.do_handshake()
            super().setup()

        def do_GET(self) -> None:
            site.requests.append(self.path)
            site.hosts.append(self.headers.get("Host"))
            reply = site.replies.get(self.path) or Reply(b'{"error": "not_found"}', status=404)
            if reply.wait_before_headers:
                site.release.wait(reply.wait_before_headers)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.content_length:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.wait_inside_body:
                self.wfile.write(reply.body[:1])
                self.wfile.flush()
                site.release.wait(reply.wait_inside_body)
                self.wfile.write(reply.body[1:])
            else:
                self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            """Quiet: the tests assert on what the server recorded, not on its log."""

    return Handler


@contextmanager
def https_server(directory: Path, kind: type[Server]) -> Iterator[Server]:
    """Run a server (an instance of `kind`) until the block ends; its CA is in `directory`."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)

    family, _, _, _, sockaddr = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0]
    state = kind(address=str(sockaddr[0]), ca_file=str(ca_file))

    def note_server_name(_: Any, name: str | None, __: ssl.SSLContext) -> None:
        state.server_names.append(name)

    context.sni_callback = note_server_name
    server = _TLSServer((state.address, 0), _handler(state), context, family)
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()  # slow answers finish now, so their threads can be joined
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
