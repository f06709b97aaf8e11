"""The sweep: halves that waited their time are paired with late partners or expired.

Pairing at ingestion sees what is already stored; two app nodes storing the two halves of a
call at the same moment can each miss the other. The sweep takes every expired half together
with every half of the same key (deleting them, so that two sweeping nodes never take the same
row), pairs what matches, and turns a lone CLIENT span that names its peer into an edge to
that peer (an external API, a service without instrumentation).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from trailmap import clock
from trailmap.graph.ingest import record_observations
from trailmap.graph.spans import Observations
from trailmap.storage import Connection, Database
from trailmap.storage import graph as store

__all__ = ["sweep_pending"]

_BATCH = 5000


async def sweep_pending(db: Database, *, now_us: int | None = None, max_pending: int) -> int:
    """Settle the halves whose wait is over; returns how many halves were settled."""
    settled = 0
    while True:
        moment = clock.now_us() if now_us is None else now_us
        count = await db.write(_sweep_once, moment, max_pending)
        settled += count
        if count < _BATCH:
            return settled


def _sweep_once(conn: Connection, now_us: int, max_pending: int) -> int:
    rows = store.claim_expired(conn, now_us, limit=_BATCH, max_pending=max_pending)
    by_org: dict[str, dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(lambda: ([], []))
    )
    for row in rows:
        callers, callees = by_org[row.org_id][row.pair_key]
        (callees if row.side == "s" else callers).append(row.payload)
    for org_id, keys in by_org.items():
        obs = Observations()
        for callers, callees in keys.values():
            if callers and callees:
                for callee in callees:
                    obs.pair(callers[0], callee)
            else:
                for half in callers or callees:
                    obs.expire(half)
        if obs.nodes:
            record_observations(conn, org_id, obs, now_us)
    return len(rows)
