"""`/healthz` (the process answers) and `/readyz` (it can serve: the database answers, at the
schema revision this code reads)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.http.context import context_of
from trailmap.http.responses import ok

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> Response:
    return ok({"status": "ok"})


@router.get(
    "/readyz", summary="Readiness: the database answers, with the schema this version reads"
)
async def readyz(request: Request) -> Response:
    ctx = context_of(request)
    # Unavailable (503, with Retry-After) propagates when the database does not answer (in
    # two seconds at most on PostgreSQL) or its schema is not the one this code reads.
    await ctx.db.check_ready()
    return ok({"status": "ready", "database": "sqlite" if ctx.db.is_sqlite else "postgresql"})
