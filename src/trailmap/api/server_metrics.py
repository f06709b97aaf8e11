"""`GET /metrics`: the server's own Prometheus metrics, and the middleware that counts requests.

Like Prometheus exporters, /metrics takes no credentials: a scraper rarely has a Trailmap
key, and what it shows is the server's, never an organization's (no organization, user,
key or raw path appears in a label; routes are templates such as
`/api/v1/events/{event_id}`). Keep it off the public internet at the load balancer, or
turn it off with `TRAILMAP_METRICS_ENABLED=false` (then it answers 404).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from trailmap.mcp.arguments import RefuseUnknownArguments
from trailmap.telemetry import ServerTelemetry

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from trailmap.storage import Database

__all__ = ["ServerMetricsMiddleware", "install_server_metrics"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The label of a request no route matched: its path is the caller's to choose, not a label.
_UNMATCHED = "unmatched"


def install_server_metrics(
    app: FastAPI, *, db: Database, mcp_server: MCPServer[Any], enabled: bool
) -> None:
    """Count the app's requests and MCP tool calls, and serve them at GET /metrics."""
    if not enabled:
        return
    telemetry = ServerTelemetry(database="sqlite" if db.is_sqlite else "postgresql")
    telemetry.registry.register(_PoolCollector(db))
    app.add_middleware(ServerMetricsMiddleware, telemetry=telemetry, routes=app.router.routes)
    # Outside Trailmap's own MCP middleware, so that the calls it answers itself (an unknown
    # argument refused) are counted too.
    chain = mcp_server.middleware
    own = [i for i, m in enumerate(chain) if isinstance(m, RefuseUnknownArguments)]
    chain.insert(own[0] if own else len(chain), _tool_call_counter(telemetry, mcp_server))
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
        # FastAPI's router records its own routes in the scope...
        path = getattr(scope.get("route"), "path", None)
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


def _tool_call_counter(telemetry: ServerTelemetry, server: MCPServer[Any]) -> ServerMiddleware[Any]:
    """An MCP SDK middleware counting `tools/call` by tool: only the server's own tool names
    become labels, whatever name a client sends."""
    known: set[str] = set()

    async def count(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        if not known:
            known.update(tool.name for tool in await server.list_tools())
        name = (ctx.params or {}).get("name")
        tool = name if isinstance(name, str) and name in known else "unknown"
        outcome = "error"
        try:
            result = await call_next(ctx)
            outcome = "error" if _is_error(result) else "ok"
            return result
        finally:
            telemetry.mcp_tool_calls.labels(tool, outcome).inc()

    return count


def _is_error(result: HandlerResult) -> bool:
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))


class _PoolCollector(Collector):
    """The database's connection pool, read at scrape time.

    On PostgreSQL it is the pool every request draws from; on SQLite it is the readers'
    pool (writes go through one writer connection, which is not pooled)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterable[Metric]:
        # Read by name: only trailmap.storage imports SQLAlchemy, and QueuePool's methods
        # are not on the Pool type the engine declares.
        pool = self._db.engine.pool
        figures = {
            "size": _pool_figure(pool, "size"),
            "checked_out": _pool_figure(pool, "checkedout"),
            # QueuePool counts overflow from -size up; only connections past the size count.
            "overflow": max(0, _pool_figure(pool, "overflow")),
        }
        docs = {
            "size": "Connections the database pool keeps open.",
            "checked_out": "Connections of the database pool in use right now.",
            "overflow": "Connections opened beyond the pool's size right now.",
        }
        for name, value in figures.items():
            yield GaugeMetricFamily(f"trailmap_db_pool_{name}", docs[name], value=value)


def _pool_figure(pool: object, method: str) -> int:
    read = getattr(pool, method, None)
    return int(read()) if callable(read) else 0
