"""The one guard for every URL Trailmap fetches because someone configured or named it: which
addresses it may reach, resolved once and connected to as checked (docs/operations.md)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Final

import anyio
import httpx

__all__ = [
    "DEFAULT_ALLOWED_NETWORKS",
    "PUBLIC",
    "NameNotResolved",
    "OutboundError",
    "OutboundPolicy",
    "OutboundRefused",
    "certificate_problem",
    "origin",
]

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# The word for "every public address" in TRAILMAP_OUTBOUND_ALLOWED_NETWORKS.
PUBLIC: Final = "public"
# Public addresses and the private ranges a company's Prometheus lives on. Loopback is left
# out on purpose: it reaches Trailmap's own ports and whatever else listens on its host.
DEFAULT_ALLOWED_NETWORKS: Final = "public,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"

_SETTING: Final = "TRAILMAP_OUTBOUND_ALLOWED_NETWORKS"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ip_network(cidr), what) for cidr, what in pairs)


# Refused whatever the setting says: instance metadata and cloud platform endpoints (which
# hand out credentials), and addresses that are no single host to connect to.
_NEVER = _networks(
    ("169.254.169.254/32", "a cloud metadata address"),  # AWS, GCP, Azure, OCI, DigitalOcean
    ("fd00:ec2::254/128", "a cloud metadata address"),  # AWS over IPv6
    ("100.100.100.200/32", "a cloud metadata address"),  # Alibaba Cloud
    ("192.0.0.192/32", "a cloud metadata address"),  # Oracle Cloud Classic
    ("168.63.129.16/32", "a cloud platform address"),  # Azure's WireServer
    ("169.254.0.0/16", "a link-local address"),  # ECS task metadata at 169.254.170.2 too
    ("fe80::/10", "a link-local address"),
    ("0.0.0.0/8", "an unspecified address"),
    ("::/128", "an unspecified address"),
    ("224.0.0.0/4", "a multicast address"),
    ("ff00::/8", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),  # 255.255.255.255, the broadcast address, too
    ("fec0::/10", "a reserved address"),  # site-local, deprecated
)

# Not public (IANA's special-purpose registries), so not reached by "public"; a CIDR in the
# setting may still allow them. Checked in order: the first match names the address.
_SPECIAL = _networks(
    ("127.0.0.0/8", "a loopback address"),
    ("::1/128", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("fc00::/7", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("192.0.0.0/24", "a special-purpose address"),
    ("192.88.99.0/24", "a special-purpose address"),
    ("2001::/23", "a special-purpose address"),
    ("64:ff9b:1::/48", "a special-purpose address"),
    ("100::/64", "a special-purpose address"),
    ("5f00::/16", "a special-purpose address"),
)
_GLOBAL_UNICAST_V6: Final = ip_network("2000::/3")
_NAT64: Final = ip_network("64:ff9b::/96")
_IPV4_TRANSLATED: Final = ip_network("::ffff:0:0:0/96")


class OutboundError(Exception):
    """Why Trailmap did not connect to a configured URL; the message names host and rule."""


class OutboundRefused(OutboundError):
    """The URL's host is, or resolves to, an address the policy refuses."""


class NameNotResolved(OutboundError):
    """The URL's host name does not resolve."""


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) as a connection sees them: case folded, default port filled in.
    Raises ValueError for a URL that has none."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ValueError(str(error)) from None
    scheme = parsed.scheme
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise ValueError(f"{url} has no host")
    return scheme, host, parsed.port or _DEFAULT_PORTS.get(scheme, 0)


def _embedded(address: IPv6Address) -> tuple[str, tuple[IPv4Address, ...]] | None:
    """The IPv4 addresses an IPv6 address carries, where a connection to it ends up, and
    the form's name; None for an address that carries none."""
    value = int(address)
    low = IPv4Address(value & 0xFFFFFFFF)
    found: tuple[str, tuple[IPv4Address, ...]] | None = None
    if address.ipv4_mapped is not None:
        found = "IPv4-mapped", (address.ipv4_mapped,)
    elif value >> 32 == 0 and value > 1:  # :: and ::1 are themselves
        found = "IPv4-compatible", (low,)
    elif address in _IPV4_TRANSLATED:
        found = "IPv4-translated", (low,)
    elif address in _NAT64:
        found = "NAT64", (low,)
    elif address.sixtofour is not None:
        found = "6to4", (address.sixtofour,)
    elif address.teredo is not None:
        found = "Teredo", address.teredo  # the Teredo server and the client behind it
    return found


def _never(address: Address) -> str | None:
    for network, what in _NEVER:
        if address.version == network.version and address in network:
            return what
    return None


def _kind(address: Address) -> str:
    """What the address is, in words: the first special range it is in, else public."""
    for network, what in _SPECIAL:
        if address.version == network.version and address in network:
            return what
    if isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "a reserved address"
    return "a public address"


def _parse(text: str) -> tuple[bool, tuple[Network, ...]]:
    public = False
    networks: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item.lower() == PUBLIC:
            public = True
            continue
        try:
            networks.append(ip_network(item))
        except ValueError as error:
            raise ValueError(
                f"{_SETTING}: {item!r} is neither {PUBLIC!r} nor a network in CIDR notation "
                f"such as 10.0.0.0/8 ({error})"
            ) from None
    return public, tuple(networks)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Which addresses Trailmap may connect to for a URL someone configured: every public
    address when `public`, and `networks`; never those of `_NEVER`, whatever else allows
    them. An IPv6 address that carries an IPv4 address (mapped, compatible, translated,
    NAT64, 6to4, Teredo) is judged by the IPv4 addresses it carries, each of which must pass."""

    public: bool = True
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> OutboundPolicy:
        """The policy a setting spells: comma-separated CIDRs and the word `public`."""
        public, networks = _parse(text)
        return cls(public=public, networks=networks)

    @classmethod
    def default(cls) -> OutboundPolicy:
        return cls.parse(DEFAULT_ALLOWED_NETWORKS)

    def public_only(self) -> OutboundPolicy:
        """This policy without its networks: public addresses, if it allows them at all."""
        return OutboundPolicy(public=self.public, networks=())

    def describe(self) -> str:
        parts = ([PUBLIC] if self.public else []) + [str(n) for n in self.networks]
        return ",".join(parts) or "nothing"

    def refusal(self, address: Address) -> str | None:
        """None when Trailmap may connect to `address`; else why not, to follow its name:
        "is a link-local address: Trailmap never connects to one"."""
        never = _never(address)
        if never is not None:
            return f"is {never}: Trailmap never connects to one"
        if isinstance(address, IPv6Address):
            embedded = _embedded(address)
            if embedded is not None:
                form, carried = embedded
                for inner in carried:
                    why = self.refusal(inner)
                    if why is not None:
                        return f"carries the IPv4 address {inner} ({form}), which {why}"
                return None
        if any(address.version == n.version and address in n for n in self.networks):
            return None
        kind = _kind(address)
        if self.public and kind == "a public address":
            return None
        return f"is {kind}, not in {_SETTING} ({self.describe()})"

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address `host` resolves to, in the resolver's order, once each; when any is
        refused, OutboundRefused names it (an answer mixing allowed and refused addresses
        is refused whole), and NameNotResolved says the name has none."""
        if _is_literal(host):
            # An address is itself: no resolver (and no worker thread) is asked.
            addresses: list[Address] = [ip_address(host)]
        else:
            try:
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):  # socket.gaierror, or a name IDNA cannot encode
                raise NameNotResolved(f"{host} does not resolve") from None
            addresses = list(dict.fromkeys(ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise NameNotResolved(f"{host} does not resolve")
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                named = host if _is_literal(host) else f"{host} resolves to {address}, which"
                raise OutboundRefused(f"{named} {why}")
        return addresses

    async def check_url(self, url: str) -> None:
        """Raise OutboundError when Trailmap would not connect to the URL's host now."""
        _, host, port = _target(url)
        await self.resolve(host, port)

    @asynccontextmanager
    async def get(
        self,
        url: str,
        *,
        io_timeout_seconds: float,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """The streamed answer to a GET of `url` (`request`'s, for a GET)."""
        async with self.request(
            "GET",
            url,
            io_timeout_seconds=io_timeout_seconds,
            params=params,
            headers=headers,
            client=client,
            verify=verify,
        ) as response:
            yield response

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        io_timeout_seconds: float,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """The streamed answer to `method` (a GET, or a POST of `content`) of `url`, from
        an address of its host this policy allows: the host is resolved once, every address
        checked, and the connection made to a checked address (trying the next one only
        when one cannot be connected to), with the host name kept for TLS and the Host
        header. Redirects are never followed, and no proxy from the environment is used (it
        would connect elsewhere). Without a `client`, one of its own is opened and closed
        (with `verify`). Each network operation is bounded by `io_timeout_seconds`; the
        caller bounds the whole exchange."""
        scheme, host, port = _target(url)
        parsed = httpx.URL(url)
        addresses = await self.resolve(host, port)
        own = None
        if client is None:
            own = client = httpx.AsyncClient(verify=verify, trust_env=False, follow_redirects=False)
        try:
            for index, address in enumerate(addresses):
                # Connecting and the TLS handshake are each bounded by the connect timeout:
                # within the caller's deadline both end by httpx's own timeout, which closes
                # the socket, rather than by a cancellation in the handshake, which leaves it
                # open for the garbage collector (httpcore 1.0).
                budget = anyio.current_effective_deadline() - anyio.current_time()
                timeouts = httpx.Timeout(
                    io_timeout_seconds, connect=min(io_timeout_seconds, max(budget, 0.0) * 0.45)
                )
                request = client.build_request(
                    method,
                    parsed.copy_with(host=str(address), port=port),
                    params=params,
                    content=content,
                    headers={
                        **{k: v for k, v in (headers or {}).items() if k.lower() != "host"},
                        "Host": parsed.netloc.decode("ascii"),
                    },
                    extensions={"sni_hostname": host} if scheme == "https" else {},
                    timeout=timeouts,
                )
                try:
                    response = await client.send(request, stream=True, follow_redirects=False)
                except httpx.ConnectError:
                    if index == len(addresses) - 1:
                        raise
                    continue
                try:
                    yield response
                finally:
                    await response.aclose()
                return
        finally:
            if own is not None:
                await own.aclose()


def _target(url: str) -> tuple[str, str, int]:
    try:
        scheme, host, port = origin(url)
    except ValueError:
        raise OutboundError(f"{url} is not a URL Trailmap can fetch") from None
    if scheme not in _DEFAULT_PORTS:
        raise OutboundError(f"{url} is not an http or https URL")
    return scheme, host, port


def _is_literal(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def certificate_problem(error: BaseException) -> str | None:
    """The verifier's own words when TLS refused the server's certificate, else None. Other
    failures (refused, reset, closed, timed out, not TLS at all) are not told apart, so that
    a configured URL cannot be used to learn which ports of a host are open."""
    current: BaseException | None = error
    for _ in range(10):  # a chain is short; the bound guards against a cycle
        if current is None:
            return None
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or "the certificate was not trusted"
        current = current.__cause__ or current.__context__
    return None
