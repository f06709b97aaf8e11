"""Queries for deployments' automatic verdicts: which are due, the lease that lets one app
node alone compute one, the verdict stored once, and the verdicts shown beside events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, exists, or_, select, update

from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import deploy_verdicts, events

__all__ = [
    "claim_verdict",
    "due_deployments",
    "get_verdict",
    "release_verdict",
    "store_verdict",
    "verdicts_of",
]

Row = dict[str, Any]
_V = deploy_verdicts.c


def due_deployments(
    conn: Connection, org_id: str, *, from_us: int, to_us: int, now_us: int, limit: int
) -> list[Row]:
    """The organization's deployments in [from_us, to_us] with no verdict yet and nobody
    computing one (no unexpired lease), oldest first."""
    settled = exists().where(
        _V.org_id == events.c.org_id,
        _V.event_id == events.c.id,
        or_(_V.verdict.is_not(None), _V.lease_expires_us >= now_us),
    )
    stmt = (
        select(events.c.id, events.c.time_us)
        .where(
            events.c.org_id == org_id,
            events.c.type == "deployment",
            events.c.time_us >= from_us,
            events.c.time_us <= to_us,
            ~settled,
        )
        .order_by(events.c.time_us, events.c.id)
        .limit(limit)
    )
    return [{"id": r[0], "time_us": r[1]} for r in conn.execute(stmt)]


def claim_verdict(
    conn: Connection, org_id: str, event_id: str, node: str, now_us: int, expires_us: int
) -> int | None:
    """Take the lease on computing the event's verdict: a conditional UPDATE of a row whose
    lease expired (and whose verdict is still missing), else an INSERT that does nothing on
    conflict; so of two nodes racing, one alone gets it. Returns the attempt's number (1 for
    the first), None when another node holds it or the verdict is there."""
    mine = and_(_V.org_id == org_id, _V.event_id == event_id)
    taken = conn.execute(
        update(deploy_verdicts)
        .where(
            mine,
            _V.verdict.is_(None),
            or_(_V.lease_expires_us.is_(None), _V.lease_expires_us < now_us),
        )
        .values(holder=node, lease_expires_us=expires_us, attempts=_V.attempts + 1)
        .returning(_V.attempts)
    ).first()
    if taken is not None:
        return int(taken[0])
    inserted = conn.execute(
        insert_for(conn, deploy_verdicts)
        .values(
            org_id=org_id, event_id=event_id, holder=node, lease_expires_us=expires_us, attempts=1
        )
        .on_conflict_do_nothing(index_elements=["org_id", "event_id"])
        .returning(_V.event_id)
    ).first()
    return 1 if inserted is not None else None


def store_verdict(
    conn: Connection,
    org_id: str,
    event_id: str,
    node: str,
    verdict: str,
    details: Row,
    now_us: int,
) -> bool:
    """Store the verdict while `node` holds the lease and none is stored; False (nothing
    written) when it lost the lease to another node or a verdict is there already."""
    done = conn.execute(
        update(deploy_verdicts)
        .where(
            _V.org_id == org_id,
            _V.event_id == event_id,
            _V.holder == node,
            _V.verdict.is_(None),
        )
        .values(
            verdict=verdict,
            details=details,
            computed_us=now_us,
            holder=None,
            lease_expires_us=None,
        )
    ).rowcount
    return bool(done == 1)


def release_verdict(conn: Connection, org_id: str, event_id: str, node: str) -> None:
    """Give the lease up (a failed attempt), for the next run to try again."""
    conn.execute(
        update(deploy_verdicts)
        .where(_V.org_id == org_id, _V.event_id == event_id, _V.holder == node)
        .values(holder=None, lease_expires_us=None)
    )


def verdicts_of(conn: Connection, org_id: str, event_ids: Sequence[str]) -> dict[str, str]:
    """The stored verdicts of these events (by Trailmap id); events without one are absent."""
    if not event_ids:
        return {}
    stmt = select(_V.event_id, _V.verdict).where(
        _V.org_id == org_id, _V.event_id.in_(list(event_ids)), _V.verdict.is_not(None)
    )
    return {r[0]: r[1] for r in conn.execute(stmt)}


def get_verdict(conn: Connection, org_id: str, event_id: str) -> Row | None:
    row = (
        conn.execute(
            select(_V.verdict, _V.computed_us, _V.details, _V.attempts).where(
                _V.org_id == org_id, _V.event_id == event_id
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)
