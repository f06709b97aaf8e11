"""Rate limits for what anyone may ask without signing in (OAuth registration, authorization,
tokens, sign-in): counted per client address in the database, so they hold across nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from trailmap import clock
from trailmap.storage import Database
from trailmap.storage import limits as store

__all__ = ["Limit", "RateLimits", "purge_rate_limits"]

_US: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `requests` per `seconds` from one client address."""

    name: str
    requests: int
    seconds: int


class RateLimits:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def retry_after(self, limit: Limit, client: str | None) -> int | None:
        """Count this request; None when it may go on, else the seconds until it may. A
        request whose address is unknown counts under one shared name."""
        if limit.requests <= 0:
            return None
        now_us = clock.now_us()
        window_us = limit.seconds * _US
        start = now_us - now_us % window_us
        subject = f"{limit.name}:{client or '-'}"[:400]
        count = await self._db.write(store.count_hit, subject, start)
        if count <= limit.requests:
            return None
        return max(1, -(-(start + window_us - now_us) // _US))


async def purge_rate_limits(db: Database, cutoff_us: int) -> int:
    """Delete counters (and quiet sign-in throttle rows) from before `cutoff_us`."""
    return int(await db.write(store.purge_before, cutoff_us))
