"""A cluster integration's watch: the lease that lets one app node alone watch it, the
watch state it resumes from, and the status (watching, where, last event, last error)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from trailmap import clock
from trailmap.storage import Database
from trailmap.storage import integrations as store

__all__ = [
    "CLUSTER_KINDS",
    "WatchStatus",
    "load_watch_state",
    "record_watch_error",
    "record_watch_event",
    "release_lease",
    "save_watch_state",
    "take_lease",
]

# The kinds a server-side watcher follows (the supervisor in ingest/kubernetes_supervisor.py).
CLUSTER_KINDS: Final = ("kubernetes", "eks")
_MAX_ERROR: Final = 1000


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """What the console and the API show of a cluster integration's watch."""

    node: str | None  # the app node holding the lease, while it holds it
    since: datetime | None
    last_event: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    @property
    def watching(self) -> bool:
        return self.node is not None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], now_us: int) -> WatchStatus:
        def at(us: int | None) -> datetime | None:
            return None if us is None else clock.from_us(us)

        expires = row.get("watch_lease_expires_us")
        held = row.get("watch_holder") is not None and expires is not None and expires >= now_us
        return cls(
            node=row.get("watch_holder") if held else None,
            since=at(row.get("watch_started_us")) if held else None,
            last_event=at(row.get("watch_last_event_us")),
            last_error=row.get("watch_last_error"),
            last_error_at=at(row.get("watch_last_error_us")),
        )

    def as_json(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat().replace("+00:00", "Z")

        return {
            "watching": self.watching,
            "node": self.node,
            "since": iso(self.since),
            "last_event": iso(self.last_event),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
        }


async def take_lease(
    db: Database, org_id: str, integration_id: str, node: str, *, seconds: float
) -> bool:
    """Take or renew the lease on the integration's watch for `seconds`; False when another
    node holds an unexpired one."""
    now_us = clock.now_us()
    expires_us = now_us + int(seconds * 1_000_000)
    return await db.write(store.take_lease, org_id, integration_id, node, now_us, expires_us)


async def release_lease(db: Database, org_id: str, integration_id: str, node: str) -> None:
    await db.write(store.release_lease, org_id, integration_id, node)


async def load_watch_state(db: Database, org_id: str, integration_id: str) -> bytes | None:
    raw = await db.read_one(store.load_watch_state, org_id, integration_id)
    return None if raw is None else raw.encode()


async def save_watch_state(
    db: Database, org_id: str, integration_id: str, node: str, state: bytes
) -> bool:
    """Store the state while `node` holds the lease; False (nothing written) once it lost it."""
    return await db.write(
        store.save_watch_state, org_id, integration_id, node, state.decode(), clock.now_us()
    )


async def record_watch_event(db: Database, org_id: str, integration_id: str) -> None:
    await db.write(store.record_watch, org_id, integration_id, {"last_event_us": clock.now_us()})


async def record_watch_error(
    db: Database, org_id: str, integration_id: str, message: str | None
) -> None:
    """Keep why the watch failed last (None clears it once it works again)."""
    values: dict[str, Any] = {
        "last_error": None if message is None else message[:_MAX_ERROR],
        "last_error_us": None if message is None else clock.now_us(),
    }
    await db.write(store.record_watch, org_id, integration_id, values)
