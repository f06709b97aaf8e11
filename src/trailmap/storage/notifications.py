"""Queries for notification channels, rules and the outbox (each scoped to one organization,
except the senders' claim of due rows, which serves every organization)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, tuple_, update

from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import notification_channels, notification_outbox, notification_rules

__all__ = [
    "claim_due",
    "count_outbox",
    "delete_channel",
    "delete_rule",
    "enabled_channels",
    "enabled_rules",
    "get_channel",
    "get_delivery",
    "get_rule",
    "has_due",
    "insert_channel",
    "insert_outbox",
    "insert_rule",
    "list_channels",
    "list_outbox",
    "list_rules",
    "mark_sent",
    "mark_unsent",
    "name_taken",
    "purge_outbox_before",
    "requeue",
    "update_channel",
    "update_rule",
]

Row = dict[str, Any]
_CHUNK = 500
_TABLES = {"channel": notification_channels, "rule": notification_rules}


def _rows(conn: Connection, stmt: Any) -> list[Row]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


def name_taken(
    conn: Connection, what: str, org_id: str, name: str, *, other_than: str | None = None
) -> bool:
    """Whether a channel (`what` "channel") or rule ("rule") of the organization has `name`."""
    c = _TABLES[what].c
    stmt = select(c.id).where(c.org_id == org_id, c.name == name)
    if other_than is not None:
        stmt = stmt.where(c.id != other_than)
    return conn.execute(stmt).first() is not None


# -- channels ---------------------------------------------------------------------------------


def insert_channel(conn: Connection, row: Row) -> None:
    conn.execute(insert(notification_channels), row)


def get_channel(conn: Connection, org_id: str, channel_id: str) -> Row | None:
    c = notification_channels.c
    found = conn.execute(
        select(notification_channels).where(c.org_id == org_id, c.id == channel_id)
    ).first()
    return None if found is None else dict(found._mapping)


def list_channels(conn: Connection, org_id: str) -> list[Row]:
    c = notification_channels.c
    return _rows(conn, select(notification_channels).where(c.org_id == org_id).order_by(c.name))


def enabled_channels(conn: Connection, org_id: str, channel_ids: Sequence[str]) -> set[str]:
    """Which of `channel_ids` are the organization's enabled channels."""
    if not channel_ids:
        return set()
    c = notification_channels.c
    stmt = select(c.id).where(c.org_id == org_id, c.enabled.is_(True), c.id.in_(channel_ids))
    return {r[0] for r in conn.execute(stmt)}


def update_channel(conn: Connection, org_id: str, channel_id: str, values: Row) -> None:
    c = notification_channels.c
    conn.execute(
        update(notification_channels).where(c.org_id == org_id, c.id == channel_id).values(**values)
    )


def delete_channel(conn: Connection, org_id: str, channel_id: str) -> None:
    """Remove the channel and its outbox rows (rules naming it keep their other channels)."""
    o = notification_outbox.c
    conn.execute(delete(notification_outbox).where(o.org_id == org_id, o.channel_id == channel_id))
    c = notification_channels.c
    conn.execute(delete(notification_channels).where(c.org_id == org_id, c.id == channel_id))


# -- rules ------------------------------------------------------------------------------------


def insert_rule(conn: Connection, row: Row) -> None:
    conn.execute(insert(notification_rules), row)


def get_rule(conn: Connection, org_id: str, rule_id: str) -> Row | None:
    c = notification_rules.c
    found = conn.execute(
        select(notification_rules).where(c.org_id == org_id, c.id == rule_id)
    ).first()
    return None if found is None else dict(found._mapping)


def list_rules(conn: Connection, org_id: str) -> list[Row]:
    c = notification_rules.c
    return _rows(conn, select(notification_rules).where(c.org_id == org_id).order_by(c.name))


def enabled_rules(conn: Connection, org_id: str) -> list[Row]:
    c = notification_rules.c
    stmt = (
        select(c.id, c.match, c.channel_ids)
        .where(c.org_id == org_id, c.enabled.is_(True))
        .order_by(c.name)
    )
    return _rows(conn, stmt)


def update_rule(conn: Connection, org_id: str, rule_id: str, values: Row) -> None:
    c = notification_rules.c
    conn.execute(
        update(notification_rules).where(c.org_id == org_id, c.id == rule_id).values(**values)
    )


def delete_rule(conn: Connection, org_id: str, rule_id: str) -> None:
    c = notification_rules.c
    conn.execute(delete(notification_rules).where(c.org_id == org_id, c.id == rule_id))


# -- the outbox -------------------------------------------------------------------------------


def insert_outbox(conn: Connection, rows: Sequence[Row]) -> int:
    """Queue `rows`; one already queued for the same channel and trigger is kept as it is
    (a trigger told twice is sent once). Returns how many were queued now."""
    queued = 0
    # In chunks, within SQLite's limit on a statement's parameters; RETURNING counts what was
    # inserted on both drivers (a rowcount after ON CONFLICT DO NOTHING is not reported by
    # every one).
    for start in range(0, len(rows), _CHUNK):
        queued += len(
            conn.execute(
                insert_for(conn, notification_outbox)
                .values(list(rows[start : start + _CHUNK]))
                .on_conflict_do_nothing(index_elements=["org_id", "channel_id", "trigger_key"])
                .returning(notification_outbox.c.id)
            ).all()
        )
    return queued


def _due(now_us: int) -> Any:
    o = notification_outbox.c
    return and_(
        o.status == "pending",
        o.next_attempt_us <= now_us,
        or_(o.lease_expires_us.is_(None), o.lease_expires_us < now_us),
    )


def has_due(conn: Connection, now_us: int) -> bool:
    """Whether any organization has a delivery due now (a read, so that an idle sender's
    polls take no write lock)."""
    o = notification_outbox.c
    return conn.execute(select(o.id).where(_due(now_us)).limit(1)).first() is not None


def claim_due(
    conn: Connection, holder: str, now_us: int, lease_until_us: int, limit: int
) -> list[Row]:
    """Lease up to `limit` due rows to `holder` (a token unique to this claim), counting an
    attempt on each, and return them with their channel. A conditional UPDATE: a row is
    taken only while pending, due, and unleased or past its lease, so two claims never hold
    the same row at once (PostgreSQL skips rows another claim has locked)."""
    o = notification_outbox.c
    due = _due(now_us)
    # The candidates are read first, then updated: as a subquery of the UPDATE, PostgreSQL
    # may run a LIMIT ... SKIP LOCKED more than once and take more than `limit` rows.
    candidates = [
        (row[0], row[1])
        for row in conn.execute(
            select(o.org_id, o.id)
            .where(due)
            .order_by(o.next_attempt_us)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ]
    if not candidates:
        return []
    claimed = conn.execute(
        update(notification_outbox)
        .where(tuple_(o.org_id, o.id).in_(candidates), due)
        .values(holder=holder, lease_expires_us=lease_until_us, attempts=o.attempts + 1)
        .returning(o.org_id, o.id)
    ).all()
    if not claimed:
        return []
    c = notification_channels.c
    stmt = (
        select(
            notification_outbox,
            c.kind.label("channel_kind"),
            c.name.label("channel_name"),
            c.settings.label("channel_settings"),
            c.secrets_encrypted.label("channel_secrets"),
            c.enabled.label("channel_enabled"),
        )
        .select_from(
            notification_outbox.join(
                notification_channels, and_(c.org_id == o.org_id, c.id == o.channel_id)
            )
        )
        .where(tuple_(o.org_id, o.id).in_([tuple(r) for r in claimed]), o.holder == holder)
    )
    return _rows(conn, stmt)


def mark_sent(conn: Connection, keys: Sequence[tuple[str, str]], holder: str, now_us: int) -> int:
    """Mark the rows of `keys` ((org_id, id) pairs) sent, those `holder`'s claim still holds
    (a claim's token is its own, so one UPDATE marks the batch); returns how many."""
    if not keys:
        return 0
    o = notification_outbox.c
    done = conn.execute(
        update(notification_outbox)
        .where(o.holder == holder, tuple_(o.org_id, o.id).in_(list(keys)))
        .values(
            status="sent",
            holder=None,
            lease_expires_us=None,
            sent_us=now_us,
            updated_us=now_us,
            last_error=None,
        )
    ).rowcount
    return int(done or 0)


def mark_unsent(
    conn: Connection,
    org_id: str,
    row_id: str,
    holder: str,
    *,
    error: str,
    next_attempt_us: int | None,
    now_us: int,
) -> bool:
    """Record a failed attempt: due again at `next_attempt_us`, or failed for good (None)."""
    o = notification_outbox.c
    values: Row = {
        "holder": None,
        "lease_expires_us": None,
        "last_error": error,
        "updated_us": now_us,
    }
    if next_attempt_us is None:
        values["status"] = "failed"
    else:
        values["next_attempt_us"] = next_attempt_us
    done = conn.execute(
        update(notification_outbox)
        .where(o.org_id == org_id, o.id == row_id, o.holder == holder)
        .values(**values)
    ).rowcount
    return bool(done)


_SHOWN = (
    "id",
    "channel_id",
    "rule_id",
    "trigger_key",
    "message",
    "status",
    "attempts",
    "next_attempt_us",
    "lease_expires_us",
    "last_error",
    "created_us",
    "updated_us",
    "sent_us",
)


def list_outbox(
    conn: Connection,
    org_id: str,
    *,
    status: str | None,
    channel_id: str | None,
    limit: int,
    before_us: int | None = None,
) -> list[Row]:
    """The organization's deliveries, newest first, each with its channel's name and kind."""
    o = notification_outbox.c
    c = notification_channels.c
    stmt = (
        select(
            *(o[name] for name in _SHOWN),
            c.name.label("channel_name"),
            c.kind.label("channel_kind"),
        )
        .select_from(
            notification_outbox.join(
                notification_channels, and_(c.org_id == o.org_id, c.id == o.channel_id)
            )
        )
        .where(o.org_id == org_id)
        .order_by(o.created_us.desc(), o.id.desc())
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(o.status == status)
    if channel_id is not None:
        stmt = stmt.where(o.channel_id == channel_id)
    if before_us is not None:
        stmt = stmt.where(o.created_us < before_us)
    return _rows(conn, stmt)


def get_delivery(conn: Connection, org_id: str, row_id: str) -> Row | None:
    o = notification_outbox.c
    c = notification_channels.c
    found = conn.execute(
        select(
            *(o[name] for name in _SHOWN),
            c.name.label("channel_name"),
            c.kind.label("channel_kind"),
        )
        .select_from(
            notification_outbox.join(
                notification_channels, and_(c.org_id == o.org_id, c.id == o.channel_id)
            )
        )
        .where(o.org_id == org_id, o.id == row_id)
    ).first()
    return None if found is None else dict(found._mapping)


def requeue(conn: Connection, org_id: str, row_id: str, now_us: int) -> bool:
    """Make a failed (or waiting) delivery due now with a fresh count of attempts; a sent one,
    or one a sender holds right now, is left as it is."""
    o = notification_outbox.c
    done = conn.execute(
        update(notification_outbox)
        .where(
            o.org_id == org_id,
            o.id == row_id,
            o.status.in_(("failed", "pending")),
            or_(o.lease_expires_us.is_(None), o.lease_expires_us < now_us),
        )
        .values(status="pending", attempts=0, next_attempt_us=now_us, updated_us=now_us)
    ).rowcount
    return bool(done)


def count_outbox(conn: Connection, org_id: str) -> dict[str, int]:
    """How many of the organization's deliveries are in each status."""
    o = notification_outbox.c
    stmt = select(o.status, func.count()).where(o.org_id == org_id).group_by(o.status)
    return {status: int(n) for status, n in conn.execute(stmt)}


def purge_outbox_before(conn: Connection, org_id: str, cutoff_us: int, *, chunk: int = 5000) -> int:
    """Delete up to `chunk` deliveries queued before the cutoff (the organization's retention
    window; what they told of is purged too), none a sender holds now; the caller repeats
    until 0."""
    o = notification_outbox.c
    doomed = (
        select(o.org_id, o.id)
        .where(o.org_id == org_id, o.created_us < cutoff_us, o.holder.is_(None))
        .limit(chunk)
    )
    removed = conn.execute(
        delete(notification_outbox).where(o.org_id == org_id, tuple_(o.org_id, o.id).in_(doomed))
    ).rowcount
    return int(removed or 0)
