"""Trailmap's one typed settings object, read from `TRAILMAP_*` environment variables, built
once by whoever starts the app (the CLI or a test) and handed to `create_app(settings)`."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trailmap.outbound import DEFAULT_ALLOWED_NETWORKS, OutboundPolicy

__all__ = ["WILDCARD_HOSTS", "Settings", "local_url"]

_MIN_SECRET_KEY = 32
_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 8000
# Listening on every address: no client reaches the server at these.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names them, binds nothing


def local_url(host: str, port: int | str) -> str:
    """The URL a client on this machine reaches a server listening on `host`:`port` at:
    loopback for a wildcard address, an IPv6 address in brackets."""
    host = host.strip()
    if host in WILDCARD_HOSTS:
        host = _DEFAULT_HOST
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAILMAP_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite:///./trailmap.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql://user@host/db.",
    )
    host: str = Field(
        default=_DEFAULT_HOST,
        description="The address `trailmap serve` listens on (its --host overrides it).",
    )
    port: int = Field(
        default=_DEFAULT_PORT,
        ge=1,
        le=65535,
        description="The port `trailmap serve` listens on (its --port overrides it).",
    )
    public_url: str = Field(
        default="",
        validate_default=True,
        description="The externally visible base URL; the OAuth issuer and MCP resource use it. "
        "Unset: http://<host>:<port> of where the server listens (127.0.0.1 for 0.0.0.0).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Encrypts the credentials organizations store (their Prometheus auth "
        "header, their integrations' webhook secrets): at least 32 characters, e.g. "
        "`openssl rand -base64 32`.",
    )
    old_secret_keys: SecretStr | None = Field(
        default=None,
        description="Retired secret keys, comma-separated: still decrypt what they encrypted, "
        "while everything new is encrypted with TRAILMAP_SECRET_KEY (rotation).",
    )
    default_timezone: str = Field(default="UTC", description="IANA time zone for day boundaries.")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long a request's whole body may take to arrive, from the server's "
        "first read of it; past it the request gets 408 and its connection is closed.",
    )
    max_event_bytes: int = Field(default=10 * 1024, ge=256, description="Largest single event.")
    max_batch_events: int = Field(default=1000, ge=1, le=10000)
    max_batch_points: int = Field(
        default=10000,
        ge=1,
        le=100000,
        description="Most metric points in one POST /api/v1/metrics.",
    )
    retention_purge_interval_seconds: int = Field(
        default=3600, ge=0, description="How often the retention purge runs; 0 turns it off."
    )
    kubernetes_poll_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How often each app node lists the kubernetes and eks integrations to "
        "start, stop or restart their watches; 0 turns the server's cluster watching off on "
        "this node.",
    )
    kubernetes_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long an app node's lease on a cluster integration's watch lasts "
        "without renewal (renewed every third of it): after a node stops uncleanly, another "
        "takes the watch over within this time.",
    )
    repository_paths: str = Field(
        default="",
        description="Folders (separated by commas or the path separator) under which a "
        "repository integration may name a local path or a file:// URL; empty: local paths are "
        "refused, so an organization can never make the server read its own files.",
    )
    repository_index_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How often each repository integration is indexed again on schedule (by "
        "whichever app node takes its lease first); 0: only on connect, push and demand.",
    )
    repository_poll_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How often each app node looks for repository integrations to index "
        "(requested on another node, or due); 0: this node indexes no repository itself.",
    )
    repository_clone_seconds: float = Field(
        default=120.0,
        gt=0,
        description="The most a repository's clone (or reading) may take; the git process "
        "group is killed then.",
    )
    repository_max_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        description="The most a repository's clone may hold on disk (git objects and the "
        "files written out); beyond it the clone is stopped.",
    )
    repository_max_files: int = Field(
        default=20_000,
        ge=1,
        description="The most files a repository's tree may hold; a larger one is refused.",
    )
    repository_max_file_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Files larger than this are never fetched (a partial clone's blob filter) "
        "nor read; they are listed as skipped.",
    )
    kubernetes_graph_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How often a watched cluster is read again into the declared graph "
        "(its namespaces, workloads, Services, Ingresses and ConfigMaps); a workload or "
        "ConfigMap change the watch sees reads it sooner. 0: clusters are not read into the "
        "graph.",
    )
    kubernetes_graph_min_seconds: float = Field(
        default=10.0,
        ge=0,
        description="The least time between two readings of one cluster into the graph, "
        "however often its objects change.",
    )
    backstage_index_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often each backstage integration's catalog is read again into the "
        "declared graph (by one app node, under a lease).",
    )
    backstage_poll_seconds: float = Field(
        default=15.0,
        ge=0,
        description="How often each app node looks for a backstage integration to read (a "
        "new one, one whose settings changed, one due); 0: this node reads none.",
    )
    verdict_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How often each app node looks for deployments whose after window has "
        "passed and reaches their automatic verdict (a lease makes one node alone compute "
        "each); 0 turns the verdict job off on this node.",
    )
    verdict_window: Literal["1h", "2h", "4h", "6h", "12h", "24h"] = Field(
        default="2h",
        description="How long before and after a deployment its automatic verdict compares "
        "(as get_metrics_around_event's window).",
    )
    verdict_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a node's claim on computing one verdict lasts: after a node "
        "stops mid-way, another computes that verdict once this has passed.",
    )
    notification_poll_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How often each app node's notification sender looks for due deliveries "
        "in the outbox when it found none; 0 turns the sender off on this node (another node "
        "sends them).",
    )
    notification_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a sender's claim on a delivery lasts: after a node stops "
        "uncleanly mid-send, another sends the delivery again once this has passed (with the "
        "same idempotency key). Keep it above notification_timeout_seconds.",
    )
    notification_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long one attempt to send a notification may take (connecting, "
        "sending and the receiver's answer).",
    )
    notification_max_attempts: int = Field(
        default=8,
        ge=1,
        description="Attempts before a delivery is marked failed (retryable by hand from the "
        "API or the console).",
    )
    notification_retry_base_seconds: float = Field(
        default=10.0,
        gt=0,
        description="The wait after a delivery's first failed attempt, doubled after each "
        "further one, up to notification_retry_max_seconds.",
    )
    notification_retry_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="The longest wait between two attempts of a delivery.",
    )
    demo_tick_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often `trailmap serve --demo` runs the demo shop on to now: its "
        "traffic and changes since the last time.",
    )
    sqlite_synchronous: str = Field(
        default="NORMAL",
        description="SQLite synchronous pragma: NORMAL survives a process crash, FULL power loss.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_statement_timeout_ms: int = Field(
        default=15000,
        ge=0,
        description="PostgreSQL's statement_timeout on every connection, in ms (0: none).",
    )
    db_pool_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a request waits for a pooled PostgreSQL connection before 503.",
    )
    db_call_timeout_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long a request waits for one PostgreSQL call (a read or a write "
        "transaction) before 503, its connection closed; unset: the statement timeout plus "
        "5 s (no limit when that is 0); 0: no limit.",
    )
    last_used_resolution_seconds: int = Field(
        default=60, ge=0, description="How stale an API key's last-used time may get."
    )
    log_level: str = Field(default="info")
    metrics_enabled: bool = Field(
        default=True,
        description="Serve the server's own Prometheus metrics at GET /metrics (no credentials; "
        "no organization data); false answers 404.",
    )
    otlp_max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest OTLP request body accepted as sent (compressed or not), in bytes.",
    )
    otlp_max_decoded_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest OTLP request body after decompression, in bytes.",
    )
    otlp_max_resources: int = Field(
        default=10_000,
        ge=1,
        description="Most resource entries (resourceSpans, resourceMetrics) in one OTLP export; "
        "more is refused with 413.",
    )
    otlp_max_scopes: int = Field(
        default=50_000,
        ge=1,
        description="Most scope entries (scopeSpans, scopeMetrics) in one OTLP export.",
    )
    otlp_max_spans: int = Field(
        default=50_000,
        ge=1,
        description="Most spans in one OTLP trace export (an SDK sends up to 512, a Collector "
        "8,192 by default).",
    )
    otlp_max_metrics: int = Field(
        default=50_000, ge=1, description="Most metrics in one OTLP metrics export."
    )
    otlp_max_data_points: int = Field(
        default=100_000, ge=1, description="Most data points in one OTLP metrics export."
    )
    otlp_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="How many OTLP exports are decoded and read at once, each on a worker "
        "thread (off the event loop); more wait their turn.",
    )
    password_hashes_at_once: int = Field(
        default=0,
        ge=0,
        le=64,
        description="How many password hashes (sign-in, setup) run at once, each taking "
        "argon2's 64 MiB while it runs; 0 sizes it from the CPUs within 256 MiB (2 on two "
        "CPUs, at most 4). More wait their turn.",
    )
    password_hash_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long a sign-in waits for its turn to hash before it is answered 503 "
        "with Retry-After.",
    )
    span_pairing_wait_seconds: int = Field(
        default=30,
        ge=1,
        description="How long a CLIENT or PRODUCER span waits for its SERVER or CONSUMER "
        "half (which may arrive in another request, at another app node).",
    )
    span_pairing_memory_seconds: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="How long an app node keeps an unpaired CLIENT, PRODUCER, SERVER or "
        "CONSUMER span in memory for its other half before storing it in the database for "
        "the other app nodes. 0 (the default) stores it before the export is answered; more "
        "is an opt-in for throughput that a crash of the node pays for (docs/operations.md).",
    )
    span_pairing_memory_max_spans: int = Field(
        default=100_000,
        ge=0,
        description="Most unpaired spans one app node keeps in memory (about 1 KB each); "
        "past it the oldest are stored in the database at once.",
    )
    span_stats_seconds: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="How long an app node adds up the per-minute call statistics of the "
        "spans it receives before writing them. 0 (the default) writes them before the "
        "export is answered; more is an opt-in for throughput that a crash of the node pays "
        "for (docs/operations.md).",
    )
    span_pairing_max_pending: int = Field(
        default=200_000,
        ge=100,
        description="Most unpaired spans kept per organization; the oldest give way first.",
    )
    graph_stale_after_days: int = Field(
        default=7,
        ge=1,
        description="A node or edge not seen for this long leaves the current graph "
        "(it stays in the graph as of earlier times).",
    )
    outbound_allowed_networks: str = Field(
        default=DEFAULT_ALLOWED_NETWORKS,
        description="The addresses Trailmap may connect to for a URL an organization "
        "configures (its Prometheus): comma-separated CIDRs, and `public` for every public "
        "address. Link-local, cloud metadata, multicast and reserved addresses are refused "
        "whatever it says. Loopback is not in the default.",
    )
    client_metadata_allow_private: bool = Field(
        default=False,
        description="Fetch OAuth Client ID Metadata Documents from the networks "
        "TRAILMAP_OUTBOUND_ALLOWED_NETWORKS allows, not only from public addresses. For "
        "tests and closed networks only.",
    )
    oauth_max_pending_per_client: int = Field(
        default=1000,
        ge=1,
        description="Most OAuth authorization requests awaiting sign-in and consent per client "
        "(they expire after 15 minutes); past it /authorize answers temporarily_unavailable.",
    )
    client_metadata_ca_file: str | None = Field(
        default=None,
        description="A PEM bundle of extra certificate authorities trusted when fetching "
        "Client ID Metadata Documents (an internal CA, or a test's).",
    )

    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed "
        "(comma-separated addresses or networks; '*' trusts anyone: only behind a proxy that "
        "overwrites the header). Sign-in throttling and the audit log use the address.",
    )
    oauth_registrations_per_hour: int = Field(
        default=20,
        ge=0,
        description="OAuth client registrations (/register) one address may make an hour; 0: "
        "no limit.",
    )
    unauthenticated_requests_per_minute: int = Field(
        default=60,
        ge=0,
        description="Requests one address may make a minute to /authorize, /token and the "
        "sign-in form; 0: no limit.",
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description="Where invitations and password reset links are e-mailed: "
        "smtp://user:password@host:587 (STARTTLS when the server offers it) or smtps://... "
        "(TLS from the start). Unset: links are printed for the person who made them.",
    )
    mail_from: str = Field(
        default="trailmap@localhost", description="The From address of Trailmap's e-mails."
    )
    invitation_days: int = Field(
        default=7, ge=1, le=90, description="How long an invitation link works."
    )
    reset_link_minutes: int = Field(
        default=60, ge=5, le=7 * 24 * 60, description="How long a password reset link works."
    )

    @field_validator("secret_key", "old_secret_keys")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for key in value.get_secret_value().split(","):
            if len(key.strip()) < _MIN_SECRET_KEY:
                raise ValueError(
                    f"each key must be at least {_MIN_SECRET_KEY} characters (openssl rand "
                    "-base64 32 makes one)"
                )
        return value

    @property
    def encryption_secret(self) -> str | None:
        """The current secret key and the retired ones, one per line, current first; None
        when no key is set."""
        if self.secret_key is None:
            return None
        retired = self.old_secret_keys.get_secret_value().split(",") if self.old_secret_keys else []
        keys = [self.secret_key.get_secret_value(), *retired]
        return "\n".join(key.strip() for key in keys if key.strip())

    @property
    def listening_url(self) -> str:
        """`local_url` of `host` and `port`: where this machine reaches the server."""
        return local_url(self.host, self.port)

    @field_validator("public_url")
    @classmethod
    def _public_url_follows_the_listener(cls, value: str, info: ValidationInfo) -> str:
        """Without TRAILMAP_PUBLIC_URL, the public URL is where the server listens, so that
        OAuth's metadata names the port a `--port` moved it to."""
        if value.strip():
            return value.strip().rstrip("/")
        if "host" not in info.data or "port" not in info.data:
            return value  # refused for its host or port already
        return local_url(info.data["host"], info.data["port"])

    @field_validator("outbound_allowed_networks")
    @classmethod
    def _known_networks(cls, value: str) -> str:
        OutboundPolicy.parse(value)  # a typo stops the server at start, not at a fetch
        return value

    @field_validator("sqlite_synchronous")
    @classmethod
    def _known_synchronous(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("must be OFF, NORMAL, FULL or EXTRA")
        return upper

    @property
    def repository_roots(self) -> tuple[str, ...]:
        """The folders `repository_paths` lists, each as written (resolved where used)."""
        parts = self.repository_paths.replace(os.pathsep, ",").split(",")
        return tuple(p.strip() for p in parts if p.strip())

    @property
    def outbound(self) -> OutboundPolicy:
        """What URLs organizations configure may reach."""
        return OutboundPolicy.parse(self.outbound_allowed_networks)

    @property
    def client_metadata_outbound(self) -> OutboundPolicy:
        """What Client ID Metadata Documents, named by anyone, may be fetched from."""
        outbound = self.outbound
        return outbound if self.client_metadata_allow_private else outbound.public_only()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
