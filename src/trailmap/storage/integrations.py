"""Queries for integrations and their deliveries (each scoped to one organization, except the
webhook's lookup of an integration by its unguessable id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, literal, select, tuple_, update

from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import integration_deliveries, integrations, organizations

__all__ = [
    "delete_integration",
    "find_delivery",
    "get_integration",
    "insert_integration",
    "list_deliveries",
    "list_integrations",
    "name_taken",
    "purge_deliveries_before",
    "record_delivery",
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
        select(integrations, _last_delivery()).where(c.org_id == org_id, c.id == integration_id)
    ).first()
    return None if row is None else dict(row._mapping)


def list_integrations(conn: Connection, org_id: str) -> list[Row]:
    """The organization's integrations by name, each with its last delivery's time."""
    c = integrations.c
    stmt = select(integrations, _last_delivery()).where(c.org_id == org_id).order_by(c.name)
    return [dict(r._mapping) for r in conn.execute(stmt)]


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
