"""Queries for integrations and their deliveries (each scoped to one organization, except the
webhook's lookup of an integration by its unguessable id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)

from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import (
    integration_deliveries,
    integration_watches,
    integrations,
    organizations,
)

__all__ = [
    "active_cluster_integrations",
    "active_integrations_with_watch",
    "delete_integration",
    "find_delivery",
    "get_integration",
    "insert_integration",
    "list_deliveries",
    "list_integrations",
    "load_watch_state",
    "name_taken",
    "purge_deliveries_before",
    "record_delivery",
    "record_watch",
    "release_lease",
    "save_watch_state",
    "take_lease",
    "update_integration",
    "webhook_target",
]

Row = dict[str, Any]


def insert_integration(conn: Connection, row: Row) -> None:
    conn.execute(insert(integrations), row)


def name_taken(conn: Connection, org_id: str, name: str, *, other_than: str | None = None) -> bool:
    c = integrations.c
    stmt = select(c.id).where(c.org_id == org_id, c.name == name)
    if other_than is not None:
        stmt = stmt.where(c.id != other_than)
    return conn.execute(stmt).first() is not None


def get_integration(conn: Connection, org_id: str, integration_id: str) -> Row | None:
    c = integrations.c
    row = conn.execute(
        select(integrations, _last_delivery(), *_WATCH_COLUMNS)
        .select_from(_with_watch())
        .where(c.org_id == org_id, c.id == integration_id)
    ).first()
    return None if row is None else dict(row._mapping)


def list_integrations(conn: Connection, org_id: str) -> list[Row]:
    """The organization's integrations by name, each with its last delivery's time."""
    c = integrations.c
    stmt = (
        select(integrations, _last_delivery(), *_WATCH_COLUMNS)
        .select_from(_with_watch())
        .where(c.org_id == org_id)
        .order_by(c.name)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


_WATCH_SHOWN = ("holder", "lease_expires_us", "started_us", "last_event_us", "last_error")
_WATCH_COLUMNS = (
    *(integration_watches.c[name].label(f"watch_{name}") for name in _WATCH_SHOWN),
    integration_watches.c.last_error_us.label("watch_last_error_us"),
)


def _with_watch() -> Any:
    c = integrations.c
    w = integration_watches.c
    return integrations.outerjoin(
        integration_watches, and_(w.org_id == c.org_id, w.integration_id == c.id)
    )


def _last_delivery() -> Any:
    d = integration_deliveries.c
    c = integrations.c
    return (
        select(func.max(d.received_us))
        .where(d.org_id == c.org_id, d.integration_id == c.id)
        .scalar_subquery()
        .label("last_delivery_us")
    )


def update_integration(conn: Connection, org_id: str, integration_id: str, values: Row) -> None:
    c = integrations.c
    conn.execute(
        update(integrations).where(c.org_id == org_id, c.id == integration_id).values(**values)
    )


def delete_integration(conn: Connection, org_id: str, integration_id: str) -> bool:
    d = integration_deliveries.c
    conn.execute(
        delete(integration_deliveries).where(d.org_id == org_id, d.integration_id == integration_id)
    )
    w = integration_watches.c
    conn.execute(
        delete(integration_watches).where(w.org_id == org_id, w.integration_id == integration_id)
    )
    c = integrations.c
    removed = conn.execute(
        delete(integrations).where(c.org_id == org_id, c.id == integration_id)
    ).rowcount
    return bool(removed)


def webhook_target(
    conn: Connection, integration_id: str, delivery_id: str | None
) -> tuple[Row, Row, Row | None] | None:
    """For a delivery, in one SELECT (by unique keys alone): the integration with this id,
    its organization, and the delivery's earlier record if `delivery_id` was delivered
    before; None when there is no such integration."""
    c = integrations.c
    d = integration_deliveries.c
    o = organizations.c
    org_columns = [col.label(f"o_{col.name}") for col in organizations.columns]
    delivery_columns = [col.label(f"d_{col.name}") for col in integration_deliveries.columns]
    joined = integrations.join(organizations, o.id == c.org_id).outerjoin(
        integration_deliveries,
        and_(
            d.org_id == c.org_id,
            d.integration_id == c.id,
            d.delivery_id == (delivery_id if delivery_id is not None else literal(None)),
        ),
    )
    found = conn.execute(
        select(*integrations.columns, *org_columns, *delivery_columns)
        .select_from(joined)
        .where(c.id == integration_id)
    ).first()
    if found is None:
        return None
    values = dict(found._mapping)
    row = {col.name: values[col.name] for col in integrations.columns}
    org = {col.name: values[f"o_{col.name}"] for col in organizations.columns}
    earlier = (
        {col.name: values[f"d_{col.name}"] for col in integration_deliveries.columns}
        if values["d_id"] is not None
        else None
    )
    return row, org, earlier


def find_delivery(
    conn: Connection, org_id: str, integration_id: str, delivery_id: str
) -> Row | None:
    d = integration_deliveries.c
    found = conn.execute(
        select(integration_deliveries).where(
            d.org_id == org_id, d.integration_id == integration_id, d.delivery_id == delivery_id
        )
    ).first()
    return None if found is None else dict(found._mapping)


def record_delivery(conn: Connection, row: Row, *, keep: int | None) -> None:
    """Store what a delivery became (replacing the record of an earlier attempt of the same
    delivery), and with `keep`, delete all but the integration's `keep` newest."""
    d = integration_deliveries.c
    changes = {
        k: v for k, v in row.items() if k not in ("org_id", "integration_id", "delivery_id", "id")
    }
    conn.execute(
        insert_for(conn, integration_deliveries)
        .values(**row)
        .on_conflict_do_update(
            index_elements=["org_id", "integration_id", "delivery_id"], set_=changes
        )
    )
    if keep is None:
        return
    mine = (d.org_id == row["org_id"], d.integration_id == row["integration_id"])
    oldest_kept = (
        select(d.received_us)
        .where(*mine)
        .order_by(d.received_us.desc())
        .offset(keep - 1)
        .limit(1)
        .scalar_subquery()
    )
    conn.execute(delete(integration_deliveries).where(*mine, d.received_us < oldest_kept))


def list_deliveries(conn: Connection, org_id: str, integration_id: str, *, limit: int) -> list[Row]:
    d = integration_deliveries.c
    stmt = (
        select(integration_deliveries)
        .where(d.org_id == org_id, d.integration_id == integration_id)
        .order_by(d.received_us.desc(), d.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def purge_deliveries_before(
    conn: Connection, org_id: str, cutoff_us: int, *, chunk: int = 5000
) -> int:
    """Delete up to `chunk` deliveries older than the cutoff; the caller repeats until 0."""
    d = integration_deliveries.c
    doomed = (
        select(d.org_id, d.id).where(d.org_id == org_id, d.received_us < cutoff_us).limit(chunk)
    )
    removed = conn.execute(
        delete(integration_deliveries).where(d.org_id == org_id, tuple_(d.org_id, d.id).in_(doomed))
    ).rowcount
    return int(removed or 0)


# -- cluster watches: the lease, the state, the status ---------------------------------------


def active_cluster_integrations(conn: Connection, kinds: tuple[str, ...]) -> list[Row]:
    """Every organization's active integrations of `kinds` (the supervisor's list: it runs
    for the whole server, so this one query spans organizations), oldest first."""
    c = integrations.c
    stmt = (
        select(integrations)
        .where(c.kind.in_(kinds), c.status == "active")
        .order_by(c.created_us, c.id)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def active_integrations_with_watch(
    conn: Connection,
    kinds: tuple[str, ...],
    *,
    org_id: str | None = None,
    integration_id: str | None = None,
) -> list[Row]:
    """Active integrations of `kinds` (every organization's, or one), each with its watch row
    (`watch_state` too): what the repository indexer lists, oldest first."""
    c = integrations.c
    stmt = (
        select(integrations, *_WATCH_COLUMNS, integration_watches.c.state.label("watch_state"))
        .select_from(_with_watch())
        .where(c.kind.in_(kinds), c.status == "active")
        .order_by(c.created_us, c.id)
    )
    if org_id is not None:
        stmt = stmt.where(c.org_id == org_id)
    if integration_id is not None:
        stmt = stmt.where(c.id == integration_id)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def take_lease(
    conn: Connection, org_id: str, integration_id: str, node: str, now_us: int, expires_us: int
) -> bool:
    """Take or renew the integration's lease for `node`: a conditional UPDATE that succeeds
    only when nobody holds it, `node` does, or the holder's lease has expired, so two nodes
    can never both hold it. A new holder starts with a fresh `started_us`."""
    w = integration_watches.c
    conn.execute(
        insert_for(conn, integration_watches)
        .values(org_id=org_id, integration_id=integration_id)
        .on_conflict_do_nothing(index_elements=["org_id", "integration_id"])
    )
    mine = and_(w.org_id == org_id, w.integration_id == integration_id)
    renewed = conn.execute(
        update(integration_watches)
        .where(mine, w.holder == node, w.lease_expires_us >= now_us)
        .values(lease_expires_us=expires_us)
    ).rowcount
    if renewed:
        return True
    taken = conn.execute(
        update(integration_watches)
        .where(
            mine,
            or_(w.holder.is_(None), w.holder == node, w.lease_expires_us < now_us),
        )
        .values(holder=node, lease_expires_us=expires_us, started_us=now_us)
    ).rowcount
    return bool(taken)


def release_lease(conn: Connection, org_id: str, integration_id: str, node: str) -> None:
    w = integration_watches.c
    conn.execute(
        update(integration_watches)
        .where(w.org_id == org_id, w.integration_id == integration_id, w.holder == node)
        .values(holder=None, lease_expires_us=None, started_us=None)
    )


def load_watch_state(conn: Connection, org_id: str, integration_id: str) -> str | None:
    w = integration_watches.c
    found = conn.execute(
        select(w.state).where(w.org_id == org_id, w.integration_id == integration_id)
    ).first()
    return None if found is None else found[0]


def save_watch_state(
    conn: Connection, org_id: str, integration_id: str, node: str, state: str, now_us: int
) -> bool:
    """Store the watch state, only while `node` holds the lease (a node that lost it must
    not overwrite what the new holder saved)."""
    w = integration_watches.c
    saved = conn.execute(
        update(integration_watches)
        .where(w.org_id == org_id, w.integration_id == integration_id, w.holder == node)
        .values(state=state, state_saved_us=now_us)
    ).rowcount
    return bool(saved)


def record_watch(conn: Connection, org_id: str, integration_id: str, values: Row) -> None:
    """Set status columns (`last_event_us`, `last_error`, `last_error_us`), making the row
    when there is none yet (an error found before any lease was taken)."""
    conn.execute(
        insert_for(conn, integration_watches)
        .values(org_id=org_id, integration_id=integration_id, **values)
        .on_conflict_do_update(index_elements=["org_id", "integration_id"], set_=values)
    )
