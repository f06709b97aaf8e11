"""`GET /metrics`: the server's own Prometheus metrics, and the middleware that counts requests.
Why it takes no credentials, and what no label may hold: docs/operations.md, "Monitoring"."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from trailmap.telemetry import ServerTelemetry

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from trailmap.storage import Database

__all__ = ["ServerMetricsMiddleware", "install_server_metrics"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The label of a request no route matched: its path is the caller's to choose, not a label.
_UNMATCHED = "unmatched"


def install_server_metrics(app: FastAPI, *, db: Database, telemetry: ServerTelemetry) -> None:
    """Count the app's requests, and serve `telemetry` (with the database pool) at /metrics."""
    telemetry.registry.register(_PoolCollector(db))
    app.add_middleware(ServerMetricsMiddleware, telemetry=telemetry, routes=app.router.routes)
    app.state.server_telemetry = telemetry

    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        summary="The server's own Prometheus metrics (text exposition; no credentials)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(telemetry.registry), media_type=content_type)

    app.include_router(router)


class ServerMetricsMiddleware:
    """Pure ASGI: counts each HTTP request by its route template once its response ends,
    and makes the app's telemetry current so domain code can count what it ingests."""

    def __init__(
        self, app: ASGIApp, *, telemetry: ServerTelemetry, routes: Sequence[BaseRoute]
    ) -> None:
        self._app = app
        self._telemetry = telemetry
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before it answers

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with self._telemetry.current():
                await self._app(scope, receive, send_and_note)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = self._template(scope)
            self._telemetry.http_requests.labels(method, route, str(status)).inc()
            self._telemetry.http_duration.labels(method, route).observe(
                time.perf_counter() - started
            )

    def _template(self, scope: Scope) -> str:
        """The path template of the route that answered, never the path as sent."""
        # FastAPI's router records its own routes in the scope; their template without its
        # converters (/api/v1/events/{event_id}, not {event_id:path}), as OpenAPI shows it...
        path = getattr(scope.get("route"), "path_format", None)
        if isinstance(path, str):
            return path
        # ... and a plain Starlette route (/mcp, OAuth) only its endpoint.
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return _UNMATCHED
        paths = [
            r.path
            for r in self._routes
            if isinstance(r, Route) and getattr(r, "endpoint", None) is endpoint
        ]
        if scope["path"] in paths:
            return str(scope["path"])
        return paths[0] if paths else _UNMATCHED


class _PoolCollector(Collector):
    """The database's connection pool, read at scrape time.

    On PostgreSQL it is the pool every request draws from; on SQLite it is the readers'
    pool (writes go through one writer connection, which is not pooled)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterable[Metric]:
        figures = self._db.pool_status()
        docs = {
            "size": "Connections the database pool keeps open.",
            "checked_out": "Connections of the database pool in use right now.",
            "overflow": "Connections opened beyond the pool's size right now.",
        }
        for name, value in figures.items():
            yield GaugeMetricFamily(f"trailmap_db_pool_{name}", docs[name], value=value)
