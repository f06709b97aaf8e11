"""Queries for guardrails: an organization's freezes and policies, and the recent deployments
of one service in one environment that a policy with history needs (each scoped to one
organization)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)

from trailmap.storage.tables import events, guardrail_freezes, guardrail_policies

__all__ = [
    "count_deployments",
    "delete_freeze",
    "delete_policy",
    "enabled_rule_ids",
    "get_rules",
    "insert_freeze",
    "insert_policy",
    "list_freezes",
    "list_policies",
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


# Ingestion asks which rules an organization has on every batch that holds a deployment: one
# statement, built once, reading the two primary keys' index alone (rules are never changed,
# only made and removed, so their parsed form is kept by id).
@cache
def _enabled_ids() -> Any:
    f, p = guardrail_freezes.c, guardrail_policies.c
    return union_all(
        select(literal("freeze").label("what"), f.id).where(
            f.org_id == bindparam("org_id"), f.enabled
        ),
        select(literal("policy").label("what"), p.id).where(
            p.org_id == bindparam("org_id"), p.enabled
        ),
    )


def enabled_rule_ids(conn: Connection, org_id: str) -> list[tuple[str, str]]:
    """("freeze" or "policy", id) of the organization's enabled rules."""
    return [(r[0], r[1]) for r in conn.execute(_enabled_ids(), {"org_id": org_id}).all()]


def get_rules(
    conn: Connection, org_id: str, freeze_ids: Sequence[str], policy_ids: Sequence[str]
) -> tuple[list[Row], list[Row]]:
    """The rows of these freezes and policies of the organization."""
    f, p = guardrail_freezes.c, guardrail_policies.c
    freezes = (
        [
            dict(r._mapping)
            for r in conn.execute(
                select(guardrail_freezes).where(f.org_id == org_id, f.id.in_(freeze_ids))
            )
        ]
        if freeze_ids
        else []
    )
    policies = (
        [
            dict(r._mapping)
            for r in conn.execute(
                select(guardrail_policies).where(p.org_id == org_id, p.id.in_(policy_ids))
            )
        ]
        if policy_ids
        else []
    )
    return freezes, policies


def _same_pair(with_environment: bool, type_count: int) -> list[Any]:
    c = events.c
    return [
        c.org_id == bindparam("org_id"),
        c.service == bindparam("service"),
        c.time_us >= bindparam("from_us"),
        c.time_us <= bindparam("to_us"),
        # Plain parameters, not an expanding IN: the statement's text stays one and cached.
        or_(*(c.type == bindparam(f"type_{i}") for i in range(type_count))),
        c.subject == bindparam("environment") if with_environment else c.subject.is_(None),
    ]


@cache
def _recent_statement(with_environment: bool, type_count: int) -> Any:
    c = events.c
    return select(c.time_us, c.type, c.version, c.source, c.event_id).where(
        *_same_pair(with_environment, type_count)
    )


@cache
def _count_statement(with_environment: bool, type_count: int) -> Any:
    c = events.c
    # At most `most` rows are visited: a caller that needs to know only whether there are
    # fewer than a bound does not pay for a week of a busy service's deployments.
    found = (
        select(literal(1).label("one"))
        .where(
            *_same_pair(with_environment, type_count),
            c.source.not_like(bindparam("detected_like")),
            ~and_(c.source == bindparam("own_source"), c.event_id == bindparam("own_event_id")),
        )
        .limit(bindparam("most"))
        .subquery()
    )
    return select(func.count()).select_from(found)


def _params(
    org_id: str,
    service: str,
    environment: str | None,
    from_us: int,
    to_us: int,
    types: Sequence[str],
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "org_id": org_id,
        "service": service,
        "from_us": from_us,
        "to_us": to_us,
        **{f"type_{i}": t for i, t in enumerate(types)},
    }
    if environment is not None:
        params["environment"] = environment
    return params


def recent_deployments(
    conn: Connection,
    org_id: str,
    *,
    service: str,
    environment: str | None,
    from_us: int,
    to_us: int,
    types: Sequence[str],
) -> list[tuple[int, str, str | None, str, str]]:
    """(time_us, type, version, source, event_id) of the events of `types` of one service in
    one environment (none: events without one) in [from_us, to_us]: what the policies that
    count earlier deployments one by one look at (a day at most)."""
    params = _params(org_id, service, environment, from_us, to_us, types)
    result = conn.execute(_recent_statement(environment is not None, len(types)), params)
    return [(r[0], r[1], r[2], r[3], r[4]) for r in result.all()]


def count_deployments(
    conn: Connection,
    org_id: str,
    *,
    service: str,
    environment: str | None,
    from_us: int,
    to_us: int,
    types: Sequence[str],
    detected_prefix: str,
    own_key: tuple[str, str],
    most: int,
) -> int:
    """How many events of `types` of one service in one environment in [from_us, to_us],
    counting to `most` at most; without those whose source starts with `detected_prefix`,
    nor the event `own_key` (a redelivery's stored copy)."""
    params = _params(org_id, service, environment, from_us, to_us, types) | {
        "detected_like": detected_prefix + "%",
        "own_source": own_key[0],
        "own_event_id": own_key[1],
        "most": most,
    }
    return int(
        conn.execute(_count_statement(environment is not None, len(types)), params).scalar_one()
    )
