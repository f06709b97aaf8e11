"""Deployments' automatic verdicts as the timeline shows them, beside each deployment (the
job that reaches them is metrics/verdicts.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trailmap import clock
from trailmap.storage import Database
from trailmap.storage import verdicts as store

__all__ = ["verdict_of", "verdicts_of", "with_verdicts"]


async def verdicts_of(db: Database, org_id: str, event_ids: Sequence[str]) -> dict[str, str]:
    """The verdicts reached for these events (Trailmap ids); those without one are absent."""
    if not event_ids:
        return {}
    return await db.read_point(store.verdicts_of, org_id, list(event_ids))


async def with_verdicts(db: Database, org_id: str, events: list[dict[str, Any]]) -> None:
    """Add `verdict` to each rendered deployment that has one (one lookup per page, and
    none for a page without deployments)."""
    ids = [e["trailmap_id"] for e in events if e.get("type") == "deployment"]
    found = await verdicts_of(db, org_id, ids)
    for event in events:
        verdict = found.get(event.get("trailmap_id", ""))
        if verdict is not None:
            event["verdict"] = verdict


async def verdict_of(db: Database, org_id: str, event_id: str) -> dict[str, Any] | None:
    """One event's verdict with what it was reached from, or None when it has none yet."""
    row = await db.read_point(store.get_verdict, org_id, event_id)
    if row is None or row["verdict"] is None:
        return None
    return {
        "verdict": row["verdict"],
        "reached": clock.from_us(row["computed_us"]).isoformat().replace("+00:00", "Z"),
        **(row["details"] or {}),
    }
