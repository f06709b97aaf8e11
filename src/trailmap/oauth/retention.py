"""OAuth's purge: what anyone could make the server store, and every secret that can no
longer be accepted, go once past their time (docs/operations.md, "Retention")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from trailmap.oauth.provider import METADATA_STALE_SECONDS
from trailmap.storage import Database
from trailmap.storage import oauth as store

__all__ = ["CODE_KEPT_SECONDS", "UNUSED_CLIENT_SECONDS", "OAuthPurge", "purge_oauth"]

# A code is kept a day past its expiry: a replay within that day still revokes what it issued.
CODE_KEPT_SECONDS: Final = 86_400
# A registration nobody approved within a day is left over (a client that gave up, or a
# flood); a client that registers and signs in takes minutes.
UNUSED_CLIENT_SECONDS: Final = 86_400
_US: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class OAuthPurge:
    """How many rows of each kind one purge deleted."""

    requests: int = 0  # authorization requests that expired awaiting consent
    codes: int = 0
    tokens: int = 0  # access and refresh tokens
    clients: int = 0  # unused registrations and stale metadata documents

    @property
    def total(self) -> int:
        return self.requests + self.codes + self.tokens + self.clients


async def purge_oauth(db: Database, now_us: int) -> OAuthPurge:
    """Delete, in short transactions, what is past its time at `now_us`: expired pending
    requests, codes a day past their expiry, tokens that can never be accepted again, and
    clients nobody uses."""
    requests = await db.write_in_chunks(store.purge_requests, now_us)
    codes = await db.write_in_chunks(store.purge_codes, now_us - CODE_KEPT_SECONDS * _US)
    tokens = await db.write_in_chunks(store.purge_tokens, now_us)
    # Last: a client's requests and tokens that went above no longer keep it.
    clients = await db.write_in_chunks(
        store.purge_clients,
        registered_before_us=now_us - UNUSED_CLIENT_SECONDS * _US,
        fetched_before_us=now_us - METADATA_STALE_SECONDS * _US,
        now_us=now_us,
    )
    return OAuthPurge(requests=requests, codes=codes, tokens=tokens, clients=clients)
