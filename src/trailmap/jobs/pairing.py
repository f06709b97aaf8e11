"""Runs the span-pairing sweep on a timer for as long as the server runs."""

from __future__ import annotations

import logging

import anyio

from trailmap.errors import TrailmapError
from trailmap.graph.pairing import sweep_pending
from trailmap.storage import Database

__all__ = ["run_pairing_sweeps"]

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
