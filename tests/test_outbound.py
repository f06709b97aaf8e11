"""The outbound guard: which addresses a configured URL may reach (every form of each,
judged on literal addresses with no connection), and that a request goes only to an
address that was checked, resolved once (against real loopback servers)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from pydantic import ValidationError

from trailmap.outbound import (
    DEFAULT_ALLOWED_NETWORKS,
    NameNotResolved,
    OutboundPolicy,
    OutboundRefused,
    origin,
)
from trailmap.settings import Settings

DEFAULT = OutboundPolicy.default()
EVERYTHING = OutboundPolicy.parse("public,0.0.0.0/0,::/0")
LOOPBACK = OutboundPolicy.parse("127.0.0.0/8")


# -- the address rules, on literal addresses ------------------------------------------------


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("192.0.0.192", "a cloud metadata address"),
        ("168.63.129.16", "a cloud platform address"),
        ("169.254.170.2", "a link-local address"),
        ("169.254.0.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("febf:ffff::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 - an address under test
        ("0.1.2.3", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("fec0::1", "a reserved address"),
    ],
)
def test_link_local_metadata_unspecified_multicast_and_reserved_addresses_are_never_allowed(
    address: str, rule: str
) -> None:
    for policy in (DEFAULT, EVERYTHING):
        why = policy.refusal(ip_address(address))

        assert why == f"is {rule}: Trailmap never connects to one"


@pytest.mark.parametrize(
    ("address", "form", "carried"),
    [
        ("::ffff:169.254.169.254", "IPv4-mapped", "169.254.169.254"),
        ("::ffff:a9fe:a9fe", "IPv4-mapped", "169.254.169.254"),
        ("::169.254.169.254", "IPv4-compatible", "169.254.169.254"),
        ("::ffff:0:169.254.169.254", "IPv4-translated", "169.254.169.254"),
        ("64:ff9b::169.254.169.254", "NAT64", "169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", "NAT64", "169.254.169.254"),
        ("2002:a9fe:a9fe::1", "6to4", "169.254.169.254"),
        ("2002:a9fe:a9fe:1234:5678::1", "6to4", "169.254.169.254"),
        # Teredo: server 65.54.227.120, client 169.254.169.254 (stored bit-inverted).
        ("2001:0:4136:e378:8000:63bf:5601:5601", "Teredo", "169.254.169.254"),
        ("::ffff:100.100.100.200", "IPv4-mapped", "100.100.100.200"),
        ("2002:a9fe:0001::", "6to4", "169.254.0.1"),
        ("::ffff:224.0.0.1", "IPv4-mapped", "224.0.0.1"),
        ("64:ff9b::0.0.0.0", "NAT64", "0.0.0.0"),  # noqa: S104 - an address under test
    ],
)
def test_an_ipv6_form_carrying_a_never_allowed_ipv4_address_is_refused_for_it(
    address: str, form: str, carried: str
) -> None:
    for policy in (DEFAULT, EVERYTHING):
        why = policy.refusal(ip_address(address))

        assert why is not None
        assert why.startswith(f"carries the IPv4 address {carried} ({form}), which is ")
        assert why.endswith("Trailmap never connects to one")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::127.0.0.1",
        "2002:7f00:1::",
    ],
)
def test_loopback_in_any_form_is_refused_by_default_and_allowed_when_listed(
    address: str,
) -> None:
    why = DEFAULT.refusal(ip_address(address))

    assert why is not None
    assert "a loopback address, not in TRAILMAP_OUTBOUND_ALLOWED_NETWORKS" in why
    assert DEFAULT_ALLOWED_NETWORKS in why
    allowed = OutboundPolicy.parse(f"{DEFAULT_ALLOWED_NETWORKS},127.0.0.0/8,::1/128")
    assert allowed.refusal(ip_address(address)) is None


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.10",
        "fd12:3456::1",
        "8.8.8.8",
        "172.32.0.1",  # just past 172.16.0.0/12: public
        "2606:4700:4700::1111",
        "::ffff:10.0.0.1",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ],
)
def test_the_default_allows_the_private_ranges_and_public_addresses(address: str) -> None:
    assert DEFAULT.refusal(ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("192.0.2.1", "a documentation address"),
        ("2001:db8::1", "a documentation address"),
        ("198.18.0.1", "a benchmarking address"),
        ("100::1", "a special-purpose address"),
        ("4000::1", "a reserved address"),
        ("::ffff:100.64.0.1", "a shared (carrier-grade NAT) address"),
    ],
)
def test_addresses_that_are_neither_public_nor_listed_are_refused_by_default(
    address: str, kind: str
) -> None:
    why = DEFAULT.refusal(ip_address(address))

    assert why is not None
    assert f"{kind}, not in TRAILMAP_OUTBOUND_ALLOWED_NETWORKS" in why


def test_without_public_only_the_listed_networks_are_allowed() -> None:
    policy = OutboundPolicy.parse("10.0.0.0/8")

    assert policy.refusal(ip_address("10.9.8.7")) is None
    assert policy.refusal(ip_address("8.8.8.8")) == (
        "is a public address, not in TRAILMAP_OUTBOUND_ALLOWED_NETWORKS (10.0.0.0/8)"
    )
    why = policy.refusal(ip_address("2002:808:808::1"))
    assert why is not None
    assert why.startswith("carries the IPv4 address 8.8.8.8 (6to4), which is a public address")


def test_a_network_listed_cannot_open_a_never_allowed_address() -> None:
    policy = OutboundPolicy.parse("169.254.0.0/16,fe80::/10,100.100.100.200/32")

    for address in ("169.254.169.254", "169.254.1.1", "fe80::1", "100.100.100.200"):
        why = policy.refusal(ip_address(address))
        assert why is not None
        assert why.endswith("Trailmap never connects to one")


@pytest.mark.parametrize("text", ["10.0.0.1/8", "ten.0.0.0/8", "public;10.0.0.0/8", "10.0.0.0/33"])
def test_a_setting_that_is_not_cidrs_and_public_stops_the_server_at_start(text: str) -> None:
    with pytest.raises(ValidationError, match="TRAILMAP_OUTBOUND_ALLOWED_NETWORKS"):
        Settings(outbound_allowed_networks=text)


def test_the_setting_reads_cidrs_and_public_with_spaces_and_any_case() -> None:
    settings = Settings(outbound_allowed_networks=" PUBLIC , 10.0.0.0/8,,::1 ")

    assert settings.outbound == OutboundPolicy(
        public=True, networks=(ip_network("10.0.0.0/8"), ip_network("::1/128"))
    )
    assert Settings(outbound_allowed_networks="").outbound.describe() == "nothing"


def test_client_metadata_documents_reach_public_addresses_only_unless_private_is_allowed() -> None:
    settings = Settings(outbound_allowed_networks="public,10.0.0.0/8,127.0.0.1/32")
    private = Settings(
        outbound_allowed_networks="public,10.0.0.0/8,127.0.0.1/32",
        client_metadata_allow_private=True,
    )
    closed = Settings(outbound_allowed_networks="10.0.0.0/8")

    assert settings.client_metadata_outbound.refusal(ip_address("8.8.8.8")) is None
    assert settings.client_metadata_outbound.refusal(ip_address("10.0.0.1")) is not None
    assert settings.client_metadata_outbound.refusal(ip_address("127.0.0.1")) is not None
    assert private.client_metadata_outbound.refusal(ip_address("127.0.0.1")) is None
    assert private.client_metadata_outbound.refusal(ip_address("169.254.169.254")) is not None
    assert closed.client_metadata_outbound.refusal(ip_address("8.8.8.8")) is not None


def test_the_origin_is_scheme_host_and_port_with_the_default_port_filled_in() -> None:
    assert origin("HTTP://Prometheus.Example/a") == ("http", "prometheus.example", 80)
    assert origin("http://prometheus.example:80/b") == origin("http://prometheus.example")
    assert origin("https://prometheus.example/") == ("https", "prometheus.example", 443)
    assert origin("http://[::1]:9090/p") == ("http", "::1", 9090)
    assert origin("http://prometheus.example:9090") != origin("http://prometheus.example:9091")
    assert origin("http://prometheus.example") != origin("https://prometheus.example")


# -- resolving and connecting, against real loopback servers -------------------------------


@dataclass
class Listener:
    url: str  # http://127.0.0.1:<port>
    port: int
    connections: int = 0
    hosts: list[str] = field(default_factory=list)


@asynccontextmanager
async def _listener() -> AsyncIterator[Listener]:
    """A loopback HTTP server answering 200 "ok", counting the connections it accepts."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        listening.connections += 1
        async with stream:
            request = await stream.receive()
            for line in request.split(b"\r\n"):
                if line.lower().startswith(b"host:"):
                    listening.hosts.append(line[5:].strip().decode())
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's
        listening = Listener(url=f"http://127.0.0.1:{port}", port=port)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, serve)
            try:
                yield listening
            finally:
                tasks.cancel_scope.cancel()


def _resolver(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Make anyio.getaddrinfo answer each name with the next of `answers` (the last one
    repeated); returns the names asked, in order."""
    asked: list[str] = []

    async def resolve(host: str, port: int, **kwargs: Any) -> Any:
        asked.append(host)
        address = answers[min(len(asked), len(answers)) - 1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(anyio, "getaddrinfo", resolve)
    return asked


@pytest.mark.anyio
async def test_a_name_resolving_to_a_refused_address_is_refused_before_any_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _listener() as server:
        asked = _resolver(monkeypatch, "127.0.0.1")
        url = f"http://prometheus.attacker.example:{server.port}/api/v1/query"

        with pytest.raises(OutboundRefused) as refused:
            async with DEFAULT.get(url, io_timeout_seconds=5):
                pass

    assert str(refused.value) == (
        "prometheus.attacker.example resolves to 127.0.0.1, which is a loopback address, "
        f"not in TRAILMAP_OUTBOUND_ALLOWED_NETWORKS ({DEFAULT_ALLOWED_NETWORKS})"
    )
    assert asked == ["prometheus.attacker.example"]
    assert server.connections == 0


@pytest.mark.anyio
async def test_a_name_resolving_to_the_metadata_address_sends_no_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _resolver(monkeypatch, "169.254.169.254")
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        with pytest.raises(OutboundRefused, match="a cloud metadata address"):
            async with EVERYTHING.get(
                "http://metadata.attacker.example/latest/meta-data/",
                io_timeout_seconds=5,
                client=client,
            ):
                pass

    assert sent == []


@pytest.mark.anyio
async def test_an_answer_mixing_allowed_and_refused_addresses_is_refused_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def resolve(host: str, port: int, **kwargs: Any) -> Any:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in ("127.0.0.1", "169.254.169.254")
        ]

    monkeypatch.setattr(anyio, "getaddrinfo", resolve)
    async with _listener() as server:
        with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254"):
            async with LOOPBACK.get(f"http://mixed.example:{server.port}/", io_timeout_seconds=5):
                pass

    assert server.connections == 0


@pytest.mark.anyio
async def test_a_decimal_spelling_of_loopback_is_judged_by_the_address_it_resolves_to() -> None:
    async with _listener() as server:
        with pytest.raises(OutboundRefused, match=r"2130706433 resolves to 127\.0\.0\.1"):
            async with DEFAULT.get(f"http://2130706433:{server.port}/", io_timeout_seconds=5):
                pass

    assert server.connections == 0


@pytest.mark.anyio
async def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rebinding resolver: the first answer passes the check, every later one would not.
    asked = _resolver(monkeypatch, "127.0.0.1", "169.254.169.254")
    async with _listener() as server:
        url = f"http://prometheus.example:{server.port}/api/v1/query"

        async with LOOPBACK.get(url, io_timeout_seconds=5) as response:
            body = await response.aread()

    assert (response.status_code, body) == (200, b"ok")
    assert asked == ["prometheus.example"]
    assert server.connections == 1
    assert server.hosts == [f"prometheus.example:{server.port}"]


@pytest.mark.anyio
async def test_a_host_header_given_by_the_caller_cannot_replace_the_urls_own() -> None:
    async with (
        _listener() as server,
        LOOPBACK.get(
            f"{server.url}/", io_timeout_seconds=5, headers={"host": "internal.example"}
        ) as response,
    ):
        await response.aread()

    assert server.hosts == [f"127.0.0.1:{server.port}"]


@pytest.mark.anyio
async def test_a_name_that_does_not_resolve_is_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(host: str, port: int, **kwargs: Any) -> Any:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(anyio, "getaddrinfo", fail)

    with pytest.raises(NameNotResolved, match=r"prometheus\.example does not resolve"):
        await DEFAULT.check_url("http://prometheus.example:9090")
