"""Every table Trailmap keeps, as SQLAlchemy Core metadata; the migrations must match it.
How times are stored and why `org_id` leads every key: docs/internals.md."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "DEPLOYMENTS_ONLY",
    "DEPLOYMENT_EVENT_TYPES",
    "api_keys",
    "audit_events",
    "deploy_verdicts",
    "events",
    "graph_declarations",
    "graph_declared_sources",
    "graph_edges",
    "graph_metric_cursors",
    "graph_minutes",
    "graph_nodes",
    "graph_versions",
    "guardrail_freezes",
    "guardrail_policies",
    "instance_settings",
    "integration_deliveries",
    "integration_watches",
    "integrations",
    "invitations",
    "login_throttle",
    "memberships",
    "metadata",
    "metric_points",
    "metric_series",
    "metric_settings",
    "notification_channels",
    "notification_outbox",
    "notification_rules",
    "oauth_clients",
    "oauth_codes",
    "oauth_requests",
    "oauth_tokens",
    "organizations",
    "password_resets",
    "pending_spans",
    "rate_limits",
    "service_accounts",
    "service_versions",
    "usage_counters",
    "users",
    "web_sessions",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")

ID = 36  # room for a UUID in its canonical text form
# An OAuth client id: a random one from registration, or the https URL of a Client ID
# Metadata Document.
_CLIENT_ID = 2048
_HASH = 64  # SHA-256, hex

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(ID), nullable=False),
    Column("slug", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("plan", String(20), nullable=False),
    # NULL means "the plan's window"; self-hosted organizations may set their own.
    Column("retention_days", Integer, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    # Whether members (not only owners and admins) may create READ_WRITE keys.
    Column("members_write_keys", Boolean, nullable=False, server_default=false()),
    # The longest an API key may live, in days; NULL: keys may never expire.
    Column("max_key_days", Integer, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("slug"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(ID), nullable=False),
    Column("email", String(320), nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    # Set when an operator disables the user: no sign-in, no session, no personal key.
    Column("disabled_us", BigInteger, nullable=True),
    Column("last_sign_in_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("email"),
)

# A one-time link to join an organization: only the token's SHA-256 is stored.
invitations = Table(
    "invitations",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("email", String(320), nullable=False),
    Column("role", String(20), nullable=False),
    Column("token_hash", String(_HASH), nullable=False),
    Column("invited_by", String(400), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("accepted_us", BigInteger, nullable=True),
    Column("revoked_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("token_hash"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# A one-time link to set a new password: only the token's SHA-256 is stored.
password_resets = Table(
    "password_resets",
    metadata,
    Column("token_hash", String(_HASH), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("used_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("token_hash"),
    ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    Index(None, "user_id"),
)

# What happened to an organization's access and settings: who, when, from where. Never a
# secret: a key is named by its name and prefix, a setting by its name.
audit_events = Table(
    "audit_events",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("action", String(60), nullable=False),
    Column("actor", String(400), nullable=False),
    Column("target", String(400), nullable=True),
    Column("client", String(100), nullable=True),
    Column("details", Json, nullable=True),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    Index(None, "org_id", "time_us"),
)

# Requests counted per subject (an endpoint and a client address) and fixed window, shared by
# every app node: the unauthenticated OAuth endpoints' rate limits.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("subject", String(400), nullable=False),
    Column("window_us", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    PrimaryKeyConstraint("subject", "window_us"),
    Index(None, "window_us"),
)

memberships = Table(
    "memberships",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "user_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    # A user's organizations, for sign-in: a global lookup by user.
    Index(None, "user_id"),
)

service_accounts = Table(
    "service_accounts",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("name", String(100), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("org_id", "name"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("name", String(200), nullable=False),
    # The first characters of the token, shown in lists so a person can tell keys apart.
    Column("prefix", String(16), nullable=False),
    # SHA-256 of the whole token, hex. The token itself is never stored.
    Column("token_hash", String(64), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("user_id", String(ID), nullable=True),
    Column("service_account_id", String(ID), nullable=True),
    Column("created_by", String(400), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("last_used_us", BigInteger, nullable=True),
    # The last time the key (or an OAuth token minted through it) reached the MCP endpoint.
    Column("last_mcp_us", BigInteger, nullable=True),
    Column("expires_us", BigInteger, nullable=True),
    Column("revoked_us", BigInteger, nullable=True),
    # The OAuth client this key was minted for on approval ("MCP — <client name>"); NULL for
    # keys made by hand or for service accounts.
    Column("oauth_client_id", String(_CLIENT_ID), nullable=True),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    # Authentication looks a token up by its hash before the organization is known.
    UniqueConstraint("token_hash"),
    # `trailmap key revoke KEY_ID` names a key by its globally unique id alone.
    UniqueConstraint("id"),
    # Re-approving a client for the same user and organization finds its key.
    Index(None, "org_id", "oauth_client_id", "user_id"),
)

# The events a guardrail counts (deployments and rollbacks; docs/guardrails.md), as the
# condition of a partial index. A query is served by that index only when its WHERE holds
# this very condition, in literals (neither planner proves it from bound parameters).
DEPLOYMENT_EVENT_TYPES = ("deployment", "rollback")
DEPLOYMENTS_ONLY = "type IN ({})".format(", ".join(f"'{t}'" for t in DEPLOYMENT_EVENT_TYPES))

events = Table(
    "events",
    metadata,
    Column("org_id", String(ID), nullable=False),
    # Trailmap's own id (a time-ordered UUID): what /api/v1/events/{id} takes.
    Column("id", String(ID), nullable=False),
    Column("source", String(500), nullable=False),
    # The producer's CloudEvents `id`; (source, event_id) is unique per organization.
    Column("event_id", String(200), nullable=False),
    Column("type", String(100), nullable=False),
    # The type as sent, when Trailmap mapped it (CDEvents); NULL when it was kept as is.
    Column("original_type", String(200), nullable=True),
    Column("subject", String(50), nullable=True),
    Column("severity", String(10), nullable=True),
    Column("version", String(50), nullable=True),
    Column("service", String(200), nullable=True),
    Column("time_us", BigInteger, nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("datacontenttype", String(200), nullable=True),
    Column("dataschema", String(500), nullable=True),
    Column("data", Json, nullable=True),
    Column("data_base64", Text, nullable=True),
    Column("description", Text, nullable=True),
    Column("extensions", Json, nullable=True),
    # Lower-cased type, source, subject, service, version and description, for search.
    Column("search_text", Text, nullable=False),
    # The guardrail violations found when a deployment was stored, as JSON text (NULL: none).
    # Text rather than JSON: no decode (and on PostgreSQL no jsonb cast) for the many events
    # that have none, on the insert path every ingestion takes.
    Column("violations", Text, nullable=True),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("org_id", "source", "event_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    Index(None, "org_id", "time_us", "id"),
    Index(None, "org_id", "subject", "time_us"),
    Index(None, "org_id", "service", "time_us"),
    Index(None, "org_id", "type", "time_us"),
    # GET /api/v1/events/{id} also takes the producer's id without its source: a seek here,
    # where the unique index above, led by source, would be walked across the organization.
    Index(None, "org_id", "event_id"),
    # A guardrail counts one service's earlier deployments in one environment, on every
    # deployment stored: an index of deployments alone (a small share of the events), which
    # both planners take over the wider indexes above. Without it SQLite walked every
    # service's events of the environment (9 ms on a busy organization's week).
    Index(
        "ix_events_deployments",
        "org_id",
        "service",
        "subject",
        "type",
        "time_us",
        # Covering the filters on the way (a producer's report, not the deployment itself):
        # SQLite counts from the index alone, PostgreSQL too where vacuum has been.
        "source",
        "event_id",
        sqlite_where=text(DEPLOYMENTS_ONLY),
        postgresql_where=text(DEPLOYMENTS_ONLY),
    ),
)

usage_counters = Table(
    "usage_counters",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("metric", String(40), nullable=False),
    # "2026-11" for a month, "2026-11-21" for a day (UTC).
    Column("period", String(10), nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "metric", "period"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

instance_settings = Table(
    "instance_settings",
    metadata,
    Column("name", String(100), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("name"),
)

# -- OAuth 2.1 (for MCP clients) ----------------------------------------------------------
# Every secret (client secret, pending request id, code, token) is stored as its SHA-256;
# rows are found by that hash. Codes and tokens belong to the API key that approval minted
# and go with it (ON DELETE CASCADE, and every lookup checks the key is still live).

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(_CLIENT_ID), nullable=False),
    # "registered" (RFC 7591) or "metadata" (a Client ID Metadata Document, cached).
    Column("kind", String(12), nullable=False),
    Column("secret_hash", String(_HASH), nullable=True),
    # The client's metadata as the SDK's OAuthClientInformationFull, without the secret.
    Column("info", Json, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("fetched_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("client_id"),
)

# An /authorize request waiting for the user to sign in and approve: any node may serve the
# login and consent pages that follow.
oauth_requests = Table(
    "oauth_requests",
    metadata,
    Column("request_hash", String(_HASH), nullable=False),
    Column("client_id", String(_CLIENT_ID), nullable=False),
    # state, scopes, code_challenge, redirect_uri, redirect_uri_provided_explicitly, resource
    Column("params", Json, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("request_hash"),
    # A client's pending requests: the per-client cap, and the cascade when a client goes.
    Index(None, "client_id"),
    ForeignKeyConstraint(["client_id"], ["oauth_clients.client_id"], ondelete="CASCADE"),
)

oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("code_hash", String(_HASH), nullable=False),
    Column("client_id", String(_CLIENT_ID), nullable=False),
    Column("org_id", String(ID), nullable=False),
    Column("key_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    # The tokens this code is exchanged for share it: a replayed code revokes them all.
    Column("family_id", String(ID), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("redirect_uri_explicit", Integer, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("resource", Text, nullable=True),
    Column("scopes", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("used_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("code_hash"),
    ForeignKeyConstraint(
        ["org_id", "key_id"], ["api_keys.org_id", "api_keys.id"], ondelete="CASCADE"
    ),
)

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("token_hash", String(_HASH), nullable=False),
    Column("kind", String(10), nullable=False),  # "access" or "refresh"
    Column("client_id", String(_CLIENT_ID), nullable=False),
    Column("org_id", String(ID), nullable=False),
    Column("key_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("family_id", String(ID), nullable=False),
    Column("resource", Text, nullable=True),
    Column("scopes", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=True),
    # A refresh token is spent when it is rotated; presenting it again revokes the family.
    Column("spent_us", BigInteger, nullable=True),
    Column("revoked_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("token_hash"),
    ForeignKeyConstraint(
        ["org_id", "key_id"], ["api_keys.org_id", "api_keys.id"], ondelete="CASCADE"
    ),
    Index(None, "family_id"),
    # A client's tokens: the purge of clients nobody uses.
    Index(None, "client_id"),
)

# The console's signed-in browsers. Only the cookie's SHA-256 is kept.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("session_hash", String(_HASH), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("session_hash"),
    ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    Index(None, "user_id"),
)

# Failed sign-ins per e-mail address and per client address, for the growing back-off.
# Kept in the database so that every app node sees the same count.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("subject", String(400), nullable=False),  # "email:<address>" or "ip:<address>"
    Column("failures", Integer, nullable=False),
    Column("last_failure_us", BigInteger, nullable=False),
    Column("blocked_until_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("subject"),
)


# -- the architecture graph ----------------------------------------------------------------
# Node and edge ids are UUIDv5 of what they are (graph/model.py), so any app node computes
# them without a read. A node or edge row is written when it first appears and when its
# last-seen time moves by more than a minute; statistics go to graph_minutes.

_NAME = 300

graph_nodes = Table(
    "graph_nodes",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("name", String(_NAME), nullable=False),
    Column("environment", String(100), nullable=False),
    Column("attributes", Json, nullable=False),
    Column("sources", Json, nullable=False),
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

graph_edges = Table(
    "graph_edges",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("source_id", String(ID), nullable=False),
    Column("target_id", String(ID), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("attributes", Json, nullable=False),
    Column("sources", Json, nullable=False),
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# What repositories, clusters and catalogs declare (graph/declared.py), one row per source
# and node or edge; joined to what traces observe when a snapshot is built. A declaration
# that a later reading of its source no longer holds is kept with `removed_us`, so the graph
# as it was at any time (and what went away since) can still be told.
graph_declarations = Table(
    "graph_declarations",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("source_key", String(100), nullable=False),  # an integration's id, for one
    Column("key", String(64), nullable=False),  # sha256 of what is declared
    Column("subject", String(10), nullable=False),  # node | edge
    Column("body", Json, nullable=False),  # names, kind, environment, aliases, attributes
    Column("evidence", Json, nullable=False),  # [{reader, file, line, detail}]
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("removed_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("org_id", "source_key", "key"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# Each declaring source's last reading: what it read (a commit, a resource version), when,
# how much it declared, what it skipped and why, and its last error.
graph_declared_sources = Table(
    "graph_declared_sources",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("source_key", String(100), nullable=False),
    Column("kind", String(20), nullable=False),  # repository | kubernetes | eks | backstage
    Column("label", String(200), nullable=False),
    Column("revision", String(200), nullable=True),
    Column("read_us", BigInteger, nullable=True),
    Column("nodes", Integer, nullable=False),
    Column("edges", Integer, nullable=False),
    Column("skipped", Json, nullable=False),
    Column("error", Text, nullable=True),
    Column("error_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("org_id", "source_key"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# Bumped whenever a node or edge appears, so app nodes know when to rebuild their in-memory
# graph of the organization.
graph_versions = Table(
    "graph_versions",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("changed_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# Number of latency buckets in graph_minutes (graph/stats.py gives their bounds).
LATENCY_BUCKETS = 32

# Per minute, per edge (the caller's view) or per service node (its SERVER and CONSUMER
# spans): calls, errors, and a latency histogram. Fixed bucket columns let every app node add
# to the same row in one atomic INSERT ... ON CONFLICT DO UPDATE, on SQLite and PostgreSQL.
graph_minutes = Table(
    "graph_minutes",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("subject_id", String(ID), nullable=False),  # an edge id or a node id
    Column("minute_us", BigInteger, nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),  # the sum, for the mean
    *(Column(f"b{i:02d}", BigInteger, nullable=False) for i in range(LATENCY_BUCKETS)),
    PrimaryKeyConstraint("org_id", "subject_id", "minute_us"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    Index(None, "minute_us"),
)

# Versions seen per service node: a new one is a deployment detected from traces.
service_versions = Table(
    "service_versions",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("node_id", String(ID), nullable=False),
    Column("version", String(100), nullable=False),
    Column("first_seen_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "node_id", "version"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# Halves of a call waiting for their other half: a CLIENT span (side "c") or a PRODUCER span
# (side "p"), keyed by trace id + its span id, or a SERVER or CONSUMER span (side "s"), keyed
# by trace id + its parent span id. Any app node pairs them; the sweep (graph/learn/pairing.py)
# settles the rest. `expires_us` is indexed alone: the sweep looks across organizations.
pending_spans = Table(
    "pending_spans",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("pair_key", String(48), nullable=False),
    Column("side", String(1), nullable=False),
    # The half's own span id: a producer's span may have many consumers, each its own half.
    Column("span_id", String(16), nullable=False),
    Column("payload", Json, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "pair_key", "side", "span_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    Index(None, "expires_us"),
)


# Where each running total of the Collector's servicegraph connector stood when it was last
# received (graph/learn/servicegraph.py): its next value minus this is what the interval added.
# Kept in the database, not in an app node's memory, so that consecutive exports of one
# Collector may reach different app nodes. `series_key` is a SHA-256 of the metric's name and
# attributes; `buckets` the total's latency histogram in graph_minutes' buckets ([] for a
# counter).
graph_metric_cursors = Table(
    "graph_metric_cursors",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("series_key", String(64), nullable=False),
    Column("start_us", BigInteger, nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("count", Float, nullable=False),
    Column("sum_ms", Float, nullable=False),
    Column("buckets", Json, nullable=False),
    PrimaryKeyConstraint("org_id", "series_key"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    # An export reads its Collector's totals by their start time. (No index on time_us:
    # every export moves it, and an index on it would make each update write the index.)
    Index(None, "org_id", "start_us"),
)

# A metric series: one name of one service in one environment, with its labels (part of the
# series' identity, as in Prometheus) and kind. `series_id` is a UUIDv5 of the first four,
# so every app node finds the same series without a lookup. `service` is "" for a metric of
# no service.
metric_series = Table(
    "metric_series",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("series_id", String(ID), nullable=False),
    Column("name", String(200), nullable=False),
    Column("service", String(200), nullable=False),
    Column("environment", String(50), nullable=False),
    Column("labels", Json, nullable=False),
    # "gauge": each point is the value; "counter": a running total, read back as a rate.
    Column("kind", String(10), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "series_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    Index(None, "org_id", "service", "environment", "name"),
)

# Points of a series: one value per series and time, so a repeated push changes nothing.
metric_points = Table(
    "metric_points",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("series_id", String(ID), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("value", Float, nullable=False),
    PrimaryKeyConstraint("org_id", "series_id", "time_us"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
    Index(None, "time_us"),
)

# Which source serves each metric, and the organization's Prometheus-compatible API. The
# credential it needs is kept encrypted (Fernet, with a key derived from TRAILMAP_SECRET_KEY),
# because it must be sent as it is: a hash would not do.
metric_settings = Table(
    "metric_settings",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("settings", Json, nullable=False),
    Column("auth_header_encrypted", Text, nullable=True),
    Column("updated_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# An organization's connection to a producer that calls in (a GitHub or GitLab webhook) or is
# watched (a cluster). The webhook secret is kept encrypted (Fernet, from TRAILMAP_SECRET_KEY);
# after a rotation the previous one is accepted too until `previous_expires_us`.
integrations = Table(
    "integrations",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("name", String(100), nullable=False),
    Column("settings", Json, nullable=False),
    Column("status", String(20), nullable=False),
    Column("secret_encrypted", Text, nullable=False),
    Column("previous_secret_encrypted", Text, nullable=True),
    Column("previous_expires_us", BigInteger, nullable=True),
    Column("secret_rotated_us", BigInteger, nullable=True),
    # The settings that hold credentials (a cluster's kubeconfig), a JSON object, encrypted.
    Column("secret_settings_encrypted", Text, nullable=True),
    Column("created_by", String(400), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    # The webhook's URL names the integration by its id alone (a random UUID).
    UniqueConstraint("id"),
    UniqueConstraint("org_id", "name"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# A cluster integration's watch (kinds kubernetes and eks): the lease that lets one app
# node alone watch it, the watch state it resumes from, and what the console shows.
integration_watches = Table(
    "integration_watches",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("integration_id", String(ID), nullable=False),
    Column("holder", String(200), nullable=True),  # the app node that holds the lease
    Column("lease_expires_us", BigInteger, nullable=True),
    Column("state", Text, nullable=True),  # WatchState.to_json(), a JSON document
    Column("state_saved_us", BigInteger, nullable=True),
    Column("started_us", BigInteger, nullable=True),  # when the holder started watching
    Column("last_event_us", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("org_id", "integration_id"),
    ForeignKeyConstraint(
        ["org_id", "integration_id"],
        ["integrations.org_id", "integrations.id"],
        ondelete="CASCADE",
    ),
)

# What each delivery to an integration became: the forge's delivery id is unique per
# integration (a redelivery is a duplicate), with the events it made or why it made none.
integration_deliveries = Table(
    "integration_deliveries",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("integration_id", String(ID), nullable=False),
    Column("delivery_id", String(200), nullable=False),
    Column("event_name", String(100), nullable=True),
    Column("received_us", BigInteger, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("reason", Text, nullable=True),
    Column("event_ids", Json, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("org_id", "integration_id", "delivery_id"),
    ForeignKeyConstraint(
        ["org_id", "integration_id"],
        ["integrations.org_id", "integrations.id"],
        ondelete="CASCADE",
    ),
    Index(None, "org_id", "integration_id", "received_us"),
    Index(None, "org_id", "received_us"),
)

# A deployment's automatic verdict (metrics/verdicts.py): the lease that lets one app node
# alone compute it, then the verdict itself, kept beside the event (which it goes with).
deploy_verdicts = Table(
    "deploy_verdicts",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("event_id", String(ID), nullable=False),  # the event's Trailmap id
    Column("holder", String(200), nullable=True),  # the app node computing it, while it does
    Column("lease_expires_us", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # regressed, no_significant_change, improved, not_enough_data; NULL until computed.
    Column("verdict", String(30), nullable=True),
    Column("computed_us", BigInteger, nullable=True),
    Column("details", Json, nullable=True),  # the window, each metric's verdict, the summary
    PrimaryKeyConstraint("org_id", "event_id"),
    ForeignKeyConstraint(
        ["org_id", "event_id"], ["events.org_id", "events.id"], ondelete="CASCADE"
    ),
)

# An organization's change-freeze windows: one-off (starts_us, ends_us) or weekly
# (`recurrence`: days, start, end, optional end_day, timezone). Empty `environments` or
# `services` lists mean every one (docs/guardrails.md).
guardrail_freezes = Table(
    "guardrail_freezes",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("name", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("environments", Json, nullable=False),
    Column("services", Json, nullable=False),
    Column("starts_us", BigInteger, nullable=True),
    Column("ends_us", BigInteger, nullable=True),
    Column("recurrence", Json, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("created_by", String(400), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# An organization's deployment policies, one of six kinds with its `settings`.
guardrail_policies = Table(
    "guardrail_policies",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("name", String(100), nullable=False),
    Column("settings", Json, nullable=False),
    Column("environments", Json, nullable=False),
    Column("services", Json, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_by", String(400), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# Where an organization's notifications go (a signed webhook, SMTP, PagerDuty, Opsgenie, Slack,
# Google Chat). What a channel needs to send but must not show (a signing secret, a password,
# a routing key, a URL that embeds a token) is a JSON object encrypted (Fernet, from
# TRAILMAP_SECRET_KEY) in `secrets_encrypted`; `settings` holds the rest.
notification_channels = Table(
    "notification_channels",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("name", String(100), nullable=False),
    Column("settings", Json, nullable=False),
    Column("secrets_encrypted", Text, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("created_by", String(400), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("org_id", "name"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# Which stored events and verdicts are told to which channels: `match` holds the filters
# (event types, severities, environments, services) and what sets the rule off (`on`).
notification_rules = Table(
    "notification_rules",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("name", String(100), nullable=False),
    Column("match", Json, nullable=False),
    Column("channel_ids", Json, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_by", String(400), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("org_id", "name"),
    ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
)

# The durable outbox: one row per (channel, trigger), written in the transaction that stored
# what it tells of; a sender on any app node claims due rows with a lease (`holder`, a token
# of its claim, until `lease_expires_us`), sends, and marks them sent or due again later.
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("org_id", String(ID), nullable=False),
    Column("id", String(ID), nullable=False),
    Column("channel_id", String(ID), nullable=False),
    Column("rule_id", String(ID), nullable=True),
    # What the notification is about, e.g. `event:<id>` or `verdict:<id>:regressed`.
    Column("trigger_key", String(200), nullable=False),
    Column("message", Json, nullable=False),
    # pending (due at next_attempt_us), sent, or failed (max attempts reached).
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("holder", String(100), nullable=True),
    Column("lease_expires_us", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("sent_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("org_id", "channel_id", "trigger_key"),
    ForeignKeyConstraint(
        ["org_id", "channel_id"],
        ["notification_channels.org_id", "notification_channels.id"],
        ondelete="CASCADE",
    ),
    # The senders' question spans organizations: which rows are due now.
    Index(None, "status", "next_attempt_us"),
    Index(None, "org_id", "created_us"),
)
