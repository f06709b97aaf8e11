"""Runs the retention purge on a timer for as long as the server runs."""

from __future__ import annotations

import logging

import anyio

from trailmap.errors import TrailmapError
from trailmap.storage import Database
from trailmap.timeline.retention import purge_expired_events

__all__ = ["run_retention_purges"]

log = logging.getLogger(__name__)


async def run_retention_purges(db: Database, *, interval_seconds: float) -> None:
    """Purge now and then every `interval_seconds`; a failure is logged and retried next time.

    Every node may run this: the deletes are idempotent, so two nodes purging at once only
    repeat a little work.
    """
    while True:
        try:
            await purge_expired_events(db)
        except TrailmapError as error:
            log.warning("retention purge skipped: %s", error.message)
        except Exception:
            log.exception("retention purge failed; trying again at the next interval")
        await anyio.sleep(interval_seconds)
