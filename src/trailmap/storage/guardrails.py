"""Queries for guardrails: an organization's freezes and policies, and the recent deployments
of one service in one environment that a policy with history needs (each scoped to one
organization)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from trailmap.storage.tables import events, guardrail_freezes, guardrail_policies

__all__ = [
    "delete_freeze",
    "delete_policy",
    "insert_freeze",
    "insert_policy",
    "list_freezes",
    "list_policies",
    "load_rules",
    "recent_deployments",
]

Row = dict[str, Any]


def insert_freeze(conn: Connection, row: Row) -> None:
    conn.execute(insert(guardrail_freezes), row)


def insert_policy(conn: Connection, row: Row) -> None:
    conn.execute(insert(guardrail_policies), row)


def list_freezes(conn: Connection, org_id: str) -> list[Row]:
    c = guardrail_freezes.c
    stmt = select(guardrail_freezes).where(c.org_id == org_id).order_by(c.created_us, c.id)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def list_policies(conn: Connection, org_id: str) -> list[Row]:
    c = guardrail_policies.c
    stmt = select(guardrail_policies).where(c.org_id == org_id).order_by(c.created_us, c.id)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def delete_freeze(conn: Connection, org_id: str, freeze_id: str) -> Row | None:
    c = guardrail_freezes.c
    found = conn.execute(
        select(guardrail_freezes).where(c.org_id == org_id, c.id == freeze_id)
    ).first()
    if found is None:
        return None
    conn.execute(delete(guardrail_freezes).where(c.org_id == org_id, c.id == freeze_id))
    return dict(found._mapping)


def delete_policy(conn: Connection, org_id: str, policy_id: str) -> Row | None:
    c = guardrail_policies.c
    found = conn.execute(
        select(guardrail_policies).where(c.org_id == org_id, c.id == policy_id)
    ).first()
    if found is None:
        return None
    conn.execute(delete(guardrail_policies).where(c.org_id == org_id, c.id == policy_id))
    return dict(found._mapping)


# Ingestion asks for the enabled rules of one organization on every batch that holds a
# deployment: the statements are built once.
@cache
def _enabled_freezes() -> Any:
    c = guardrail_freezes.c
    return select(guardrail_freezes).where(c.org_id == bindparam("org_id"), c.enabled)


@cache
def _enabled_policies() -> Any:
    c = guardrail_policies.c
    return select(guardrail_policies).where(c.org_id == bindparam("org_id"), c.enabled)


def load_rules(conn: Connection, org_id: str) -> tuple[list[Row], list[Row]]:
    """The organization's enabled freezes and policies."""
    params = {"org_id": org_id}
    freezes = [dict(r._mapping) for r in conn.execute(_enabled_freezes(), params)]
    policies = [dict(r._mapping) for r in conn.execute(_enabled_policies(), params)]
    return freezes, policies


@cache
def _recent_statement(with_environment: bool) -> Any:
    c = events.c
    stmt = select(c.time_us, c.type, c.source, c.event_id, c.version).where(
        c.org_id == bindparam("org_id"),
        c.service == bindparam("service"),
        c.time_us >= bindparam("from_us"),
        c.time_us <= bindparam("to_us"),
        c.type.in_(bindparam("types", expanding=True)),
    )
    if with_environment:
        return stmt.where(c.subject == bindparam("environment"))
    return stmt.where(c.subject.is_(None))


def recent_deployments(
    conn: Connection,
    org_id: str,
    *,
    service: str,
    environment: str | None,
    from_us: int,
    to_us: int,
    types: Sequence[str],
) -> list[Row]:
    """Events of `types` of one service in one environment (none: events without one) in
    [from_us, to_us], for the policies that count earlier deployments."""
    params: dict[str, Any] = {
        "org_id": org_id,
        "service": service,
        "from_us": from_us,
        "to_us": to_us,
        "types": list(types),
    }
    if environment is not None:
        params["environment"] = environment
    result = conn.execute(_recent_statement(environment is not None), params)
    return [dict(r._mapping) for r in result]
