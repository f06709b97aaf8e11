"""The verdict job: every interval, reach the verdicts of the deployments whose after window
has passed (metrics/verdicts.py). Every app node may run it; the lease on each verdict makes
one node alone compute it."""

from __future__ import annotations

import logging

import anyio

from trailmap.errors import TrailmapError
from trailmap.metrics.verdicts import node_id, reach_due_verdicts
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Database

__all__ = ["run_verdicts"]

log = logging.getLogger(__name__)


async def run_verdicts(
    db: Database,
    *,
    interval_seconds: float,
    window: str,
    lease_seconds: float,
    outbound: OutboundPolicy,
    secret_key: str | None,
) -> None:
    """Reach due verdicts now and then every `interval_seconds`; a failure is logged in one
    line and retried next time."""
    node = node_id()
    while True:
        try:
            run = await reach_due_verdicts(
                db,
                node=node,
                window=window,
                lease_seconds=lease_seconds,
                outbound=outbound,
                secret_key=secret_key,
            )
            if run.reached or run.failed:
                log.info(
                    "verdict job: %d verdicts reached, %d attempts failed", run.reached, run.failed
                )
        except TrailmapError as error:
            log.warning("verdict job skipped: %s", error.message)
        except Exception as error:  # noqa: BLE001 - the job must outlive any one failure
            log.warning("verdict job failed (%s: %s); trying again", type(error).__name__, error)
        await anyio.sleep(interval_seconds)
