"""`create_app(settings)`: the one place where Trailmap's faces, jobs and storage meet."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from mcp.server.mcpserver import Context, MCPServer
from starlette.routing import Route

from trailmap import __version__
from trailmap.accounts import Principal, authenticate
from trailmap.accounts.passwords import PasswordHashing
from trailmap.accounts.rate_limits import RateLimits
from trailmap.api import dora, events, graph, health, metrics, otlp, otlp_metrics, webhooks
from trailmap.api import guardrails as api_guardrails
from trailmap.api import integrations as api_integrations
from trailmap.api import notifications as api_notifications
from trailmap.api import team as api_team
from trailmap.api.docs import install_docs
from trailmap.api.near_misses import near_misses
from trailmap.api.schemas import CloudEventIn
from trailmap.api.server_metrics import install_server_metrics
from trailmap.console import (
    account,
    assets,
    connect,
    consent,
    home,
    keys,
    login,
    quickstart,
    service,
    setup,
    team,
)
from trailmap.console import dora as console_dora
from trailmap.console import event as console_event
from trailmap.console import graph as console_graph
from trailmap.console import graph_changes as console_graph_changes
from trailmap.console import guardrails as console_guardrails
from trailmap.console import integrations as console_integrations
from trailmap.console import notifications as console_notifications
from trailmap.console import (
    settings as console_settings,
)
from trailmap.console import timeline as console_timeline
from trailmap.console.consent import CONSENT_PATH
from trailmap.demo.live import run_live_demo
from trailmap.errors import Unauthorized
from trailmap.graph.learn.pairing import TraceIngestion
from trailmap.http.body import BodyDeadline
from trailmap.http.context import AppContext
from trailmap.http.errors import install_error_handlers
from trailmap.ingest.backstage_index import BackstageIndexer
from trailmap.ingest.kubernetes_supervisor import Supervisor, node_id
from trailmap.ingest.repository_indexer import IndexOptions, RepositoryIndexer
from trailmap.jobs.pairing import close_ingestion, run_ingestion_stores, run_pairing_sweeps
from trailmap.jobs.retention import run_retention_purges
from trailmap.jobs.verdicts import run_verdicts
from trailmap.mcp import McpEndpoint, build_mcp_server
from trailmap.mcp.http import transport_security
from trailmap.notifications.outbox import OutboxSettings, Sender
from trailmap.oauth.provider import TrailmapOAuthProvider
from trailmap.oauth.routes import OAuthLimits, oauth_routes
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.telemetry import ServerTelemetry

__all__ = ["create_app", "open_database", "stdio_mcp_server"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Trailmap gives AI assistants and people the operational context of production systems:
**what changed** (a timeline of CloudEvents-shaped change events) and how things connect.

Authenticate with `Authorization: Bearer <API key>` (create one with `trailmap key create`).
Every response is `{"success": true, "data": ...}`; every error is
`{"success": false, "error": "...", "code": "...", "details": [...]}`.
"""


def open_database(settings: Settings) -> Database:
    """The database `settings` name, opened as every app node and CLI command opens it."""
    return Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        sqlite_synchronous=settings.sqlite_synchronous,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        pool_timeout_s=settings.db_pool_timeout_seconds,
        call_timeout_s=settings.db_call_timeout_seconds,
    )


def stdio_mcp_server(settings: Settings, db: Database, api_key: str) -> MCPServer:
    """The MCP tools for the organization of `api_key`, to serve over stdio; the key is
    checked on every call, so a revoked key stops the next one."""

    async def principal_of(_ctx: Context) -> Principal:
        return await authenticate(db, api_key)

    return build_mcp_server(
        db,
        principal_of,
        default_timezone=settings.default_timezone,
        graph_stale_after_days=settings.graph_stale_after_days,
        secret_key=_secret_key(settings),
        outbound=settings.outbound,
    )


def _secret_key(settings: Settings) -> str | None:
    return settings.encryption_secret


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    live_demo: str | None = None,
) -> FastAPI:
    """The app; with `live_demo` (an organization's slug, loaded by demo/load.py), this node
    also keeps that demo's shop running (`trailmap serve --demo`)."""
    settings = settings or Settings()
    db = database or open_database(settings)

    telemetry = (
        ServerTelemetry(database="sqlite" if db.is_sqlite else "postgresql")
        if settings.metrics_enabled
        else None
    )
    mcp_server = build_mcp_server(
        db,
        _principal_from_request,
        default_timezone=settings.default_timezone,
        graph_stale_after_days=settings.graph_stale_after_days,
        secret_key=_secret_key(settings),
        outbound=settings.outbound,
        telemetry=telemetry,
    )
    mcp_server.streamable_http_app(
        stateless_http=True, json_response=True, transport_security=transport_security(settings)
    )
    session_manager = mcp_server.session_manager

    # OTLP exports are read on worker threads, a few at a time: the GIL runs one anyway, and
    # the default thread limiter is left to the database work of every other request.
    otlp_workers = anyio.CapacityLimiter(settings.otlp_workers)
    ingestion = TraceIngestion(
        db,
        wait_seconds=settings.span_pairing_wait_seconds,
        memory_seconds=settings.span_pairing_memory_seconds,
        max_waiting=settings.span_pairing_memory_max_spans,
        stats_seconds=settings.span_stats_seconds,
        workers=otlp_workers,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            async with session_manager.run(), anyio.create_task_group() as jobs:
                _start_periodic_jobs(jobs, db, settings, live_demo)
                # Halves that waited their time are settled a few times per waiting period.
                sweep_every = max(1.0, min(10.0, settings.span_pairing_wait_seconds / 3))
                jobs.start_soon(
                    lambda: run_pairing_sweeps(
                        db,
                        interval_seconds=sweep_every,
                        max_pending=settings.span_pairing_max_pending,
                    )
                )
                # Trace ingestion keeps things in memory only while something stores them.
                ingestion.open()
                jobs.start_soon(lambda: run_ingestion_stores(ingestion))
                try:
                    yield
                finally:
                    jobs.cancel_scope.cancel()
        finally:
            # Requests are over: what still waits in memory is stored before the database
            # closes, so a clean stop loses nothing that was acknowledged.
            await close_ingestion(ingestion)
            if database is None:
                db.close()

    app = FastAPI(
        title="Trailmap",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    oauth = TrailmapOAuthProvider(
        db,
        issuer=settings.public_url,
        resource=f"{settings.public_url}/mcp",
        consent_path=CONSENT_PATH,
        metadata_outbound=settings.client_metadata_outbound,
        metadata_ca_file=settings.client_metadata_ca_file,
        max_pending_per_client=settings.oauth_max_pending_per_client,
    )
    passwords = PasswordHashing(
        at_once=settings.password_hashes_at_once,
        wait_seconds=settings.password_hash_wait_seconds,
    )
    app.state.trailmap = AppContext(settings=settings, db=db, oauth=oauth, passwords=passwords)
    app.state.trace_ingestion = ingestion
    app.state.otlp_workers = otlp_workers
    # The MCP server itself, for embedders (the MCP benchmark adds its no-op floor tool).
    app.state.mcp_server = mcp_server
    install_error_handlers(app, not_found_page=assets.not_found_page)
    # metrics before events: `/api/v1/events/{id}/metrics` must be tried before
    # `/api/v1/events/{id}`, whose id may hold slashes (a producer's id, such as
    # production/checkout/1.5.0) and would otherwise take the `/metrics` as part of it.
    faces = (health, metrics, events, otlp, otlp_metrics, graph, setup, login, consent, keys)
    for face in (
        *faces,
        api_team,
        api_integrations,
        dora,
        api_guardrails,
        api_notifications,
        webhooks,
        team,
        console_settings,
        account,
        assets,
        home,
        connect,
        quickstart,
        console_graph,
        console_graph_changes,
        service,
        console_timeline,
        console_event,
        console_dora,
        console_integrations,
        console_guardrails,
        console_notifications,
    ):
        app.include_router(face.router)
    limits = OAuthLimits(
        RateLimits(db),
        registrations_per_hour=settings.oauth_registrations_per_hour,
        requests_per_minute=settings.unauthenticated_requests_per_minute,
    )
    app.router.routes.extend(oauth_routes(oauth, limits=limits))
    install_docs(app)
    endpoint = McpEndpoint(session_manager, db, settings, oauth)
    # Both spellings are served as they are: a redirect would lose the POST on some clients.
    app.router.routes.append(Route("/mcp", endpoint=endpoint))
    app.router.routes.append(Route("/mcp/", endpoint=endpoint))
    if telemetry is not None:
        install_server_metrics(app, db=db, telemetry=telemetry)
    app.include_router(near_misses(settings))
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_seconds)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _start_periodic_jobs(
    jobs: anyio.abc.TaskGroup, db: Database, settings: Settings, live_demo: str | None
) -> None:
    """The retention purge, the cluster integrations' supervisor (their watches, and their
    objects read into the graph), the deployments' verdicts, the notification outbox's sender,
    the repository indexer, the Backstage catalogs' indexer, and the demo's shop when this node
    runs it."""
    if settings.retention_purge_interval_seconds > 0:
        jobs.start_soon(
            lambda: run_retention_purges(
                db, interval_seconds=settings.retention_purge_interval_seconds
            )
        )
    if settings.kubernetes_poll_seconds > 0:
        supervisor = Supervisor(
            db,
            secret_key=_secret_key(settings),
            outbound=settings.outbound,
            max_event_bytes=settings.max_event_bytes,
            poll_seconds=settings.kubernetes_poll_seconds,
            lease_seconds=settings.kubernetes_lease_seconds,
            graph_seconds=settings.kubernetes_graph_seconds,
            graph_min_seconds=settings.kubernetes_graph_min_seconds,
        )
        jobs.start_soon(supervisor.run)
    if settings.repository_poll_seconds > 0:
        indexer = RepositoryIndexer(
            db,
            IndexOptions.from_settings(settings),
            poll_seconds=settings.repository_poll_seconds,
            every_seconds=settings.repository_index_seconds,
        )
        jobs.start_soon(indexer.run)
    if settings.backstage_poll_seconds > 0:
        catalogs = BackstageIndexer(
            db,
            secret_key=_secret_key(settings),
            outbound=settings.outbound,
            node=node_id(),
            poll_seconds=settings.backstage_poll_seconds,
            index_seconds=settings.backstage_index_seconds,
        )
        jobs.start_soon(catalogs.run)
    if settings.verdict_interval_seconds > 0:
        jobs.start_soon(
            lambda: run_verdicts(
                db,
                interval_seconds=settings.verdict_interval_seconds,
                window=settings.verdict_window,
                lease_seconds=settings.verdict_lease_seconds,
                outbound=settings.outbound,
                secret_key=_secret_key(settings),
            )
        )
    if settings.notification_poll_seconds > 0:
        sender = Sender(
            db,
            secret_key=_secret_key(settings),
            outbound=settings.outbound,
            settings=OutboxSettings(
                poll_seconds=settings.notification_poll_seconds,
                lease_seconds=settings.notification_lease_seconds,
                timeout_seconds=settings.notification_timeout_seconds,
                max_attempts=settings.notification_max_attempts,
                retry_base_seconds=settings.notification_retry_base_seconds,
                retry_max_seconds=settings.notification_retry_max_seconds,
            ),
        )
        jobs.start_soon(sender.run)
    if live_demo is not None:
        jobs.start_soon(
            lambda: run_live_demo(db, live_demo, interval_seconds=settings.demo_tick_seconds)
        )


async def _principal_from_request(ctx: Context) -> Principal:
    request = ctx.request_context.request
    principal = getattr(getattr(request, "state", None), "principal", None)
    if not isinstance(principal, Principal):
        raise Unauthorized("No API key came with this MCP request.")
    return principal


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["CloudEventIn"] = CloudEventIn.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "A Trailmap API key"}
        }
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema
