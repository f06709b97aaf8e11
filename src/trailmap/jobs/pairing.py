"""Span pairing's periodic work: storing what trace ingestion holds in this node's memory,
and the sweep of stored halves whose wait is over."""

from __future__ import annotations

import logging

import anyio

from trailmap.errors import TrailmapError
from trailmap.graph.learn.pairing import TraceIngestion, sweep_pending
from trailmap.storage import Database

__all__ = ["close_ingestion", "run_ingestion_stores", "run_pairing_sweeps"]

log = logging.getLogger(__name__)


async def run_pairing_sweeps(db: Database, *, interval_seconds: float, max_pending: int) -> None:
    """Every app node may run this: a sweep claims the rows it settles by deleting them."""
    while True:
        try:
            await sweep_pending(db, max_pending=max_pending)
        except TrailmapError as error:
            log.warning("span pairing sweep skipped: %s", error.message)
        except Exception:
            log.exception("span pairing sweep failed; trying again at the next interval")
        await anyio.sleep(interval_seconds)


async def run_ingestion_stores(ingestion: TraceIngestion) -> None:
    """Store what waited its time in memory, as often as `ingestion.store_every_seconds`;
    a failed store keeps it there, for the next time."""
    while True:
        try:
            await ingestion.store_due()
        except TrailmapError as error:
            log.warning("storing what trace ingestion keeps in memory skipped: %s", error.message)
        except Exception:
            log.exception("storing what trace ingestion keeps in memory failed; trying again")
        await anyio.sleep(ingestion.store_every_seconds)


async def close_ingestion(ingestion: TraceIngestion) -> None:
    """At shutdown: store everything trace ingestion keeps in memory (a failure is logged
    with how many halves are lost; the app stops anyway)."""
    waiting = ingestion.waiting
    try:
        stored = await ingestion.close()
    except Exception:
        log.exception(
            "could not store the statistics and %d span halves kept in memory; they are lost",
            waiting,
        )
        return
    if stored:
        log.info("stored %d span halves still waiting in memory", stored)
