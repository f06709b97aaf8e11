"""The audit log: who did what to an organization's access and settings, when, from where."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from trailmap import clock, ids
from trailmap.storage import Connection, Database
from trailmap.storage import audit as store

__all__ = ["OPERATOR", "Actor", "AuditEvent", "list_audit", "purge_audit_before", "record"]

_MAX_LIMIT: Final = 500


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, as the log names them (an e-mail, a key, the operator), and from where."""

    name: str
    client: str | None = None
    user_id: str | None = None


# The CLI holds the database itself: it acts as the instance's operator.
OPERATOR: Final = Actor("operator (trailmap CLI)")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str
    time: datetime
    action: str
    actor: str
    target: str | None
    client: str | None
    details: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "action": self.action,
            "actor": self.actor,
            "target": self.target,
            "client": self.client,
            "details": self.details,
        }


def record(
    conn: Connection,
    org_id: str,
    action: str,
    actor: Actor,
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an entry inside the caller's transaction, so the log and the change agree.
    `details` never holds a secret: name keys by name and prefix, settings by name."""
    store.insert_event(
        conn,
        org_id,
        {
            "id": ids.new_id(),
            "time_us": clock.now_us(),
            "action": action[:60],
            "actor": actor.name[:400],
            "target": None if target is None else target[:400],
            "client": None if actor.client is None else actor.client[:100],
            "details": details,
        },
    )


async def list_audit(
    db: Database, org_id: str, *, limit: int = 100, before: datetime | None = None
) -> list[AuditEvent]:
    """The organization's entries, newest first; `before` pages back."""
    limit = max(1, min(limit, _MAX_LIMIT))
    before_us = None if before is None else clock.to_us(before)
    rows = await db.read_one(store.list_events, org_id, limit=limit, before_us=before_us)
    return [
        AuditEvent(
            id=r["id"],
            time=clock.from_us(r["time_us"]),
            action=r["action"],
            actor=r["actor"],
            target=r["target"],
            client=r["client"],
            details=r["details"],
        )
        for r in rows
    ]


async def purge_audit_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Delete the organization's entries older than `cutoff_us` (its retention window)."""
    return await db.write_in_chunks(store.purge_before, org_id, cutoff_us)
