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
    "Ask",
    "answer_asks",
    "delete_freeze",
    "delete_policy",
    "enabled_rule_ids",
    "get_rules",
    "insert_freeze",
    "insert_policy",
    "list_freezes",
    "list_policies",
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


# What the policies of one deployment ask, answered in one statement of scalar subqueries: a
# round trip per policy cost more than the counting itself (each bounded, so cheap).
# Each ask: ("count" or "latest", from_us, types, most).
Ask = tuple[str, int, tuple[str, ...], int]


def _window(i: int, with_environment: bool, type_count: int) -> list[Any]:
    c = events.c
    return [
        c.org_id == bindparam("org_id"),
        c.service == bindparam("service"),
        c.time_us >= bindparam(f"from_{i}"),
        c.time_us <= bindparam("to_us"),
        or_(*(c.type == bindparam(f"type_{i}_{k}") for k in range(type_count))),
        c.subject == bindparam("environment") if with_environment else c.subject.is_(None),
        c.source.not_like(bindparam("detected_like")),
        ~and_(c.source == bindparam("own_source"), c.event_id == bindparam("own_event_id")),
    ]


@cache
def _asks_statement(with_environment: bool, shape: tuple[tuple[str, int], ...]) -> Any:
    c = events.c
    columns: list[Any] = []
    for i, (what, type_count) in enumerate(shape):
        where = _window(i, with_environment, type_count)
        if what == "latest":
            sub = select(c.time_us).where(*where).order_by(c.time_us.desc()).limit(1)
        else:
            found = select(literal(1).label("one")).where(*where).limit(bindparam(f"most_{i}"))
            sub = select(func.count()).select_from(found.subquery())
        columns.append(sub.scalar_subquery().label(f"a{i}"))
    return select(*columns)


def answer_asks(
    conn: Connection,
    org_id: str,
    *,
    service: str,
    environment: str | None,
    to_us: int,
    detected_prefix: str,
    own_key: tuple[str, str],
    asks: Sequence[Ask],
) -> list[int | None]:
    """For each ask, in one statement, among the events of its `types` of one service in one
    environment in [from_us, to_us] (without those whose source starts with
    `detected_prefix`, nor the event `own_key`): "count", how many, up to `most`; "latest",
    the time of the latest (None: none)."""
    if not asks:
        return []
    params: dict[str, Any] = {
        "org_id": org_id,
        "service": service,
        "to_us": to_us,
        "detected_like": detected_prefix + "%",
        "own_source": own_key[0],
        "own_event_id": own_key[1],
    }
    if environment is not None:
        params["environment"] = environment
    for i, (what, from_us, types, most) in enumerate(asks):
        params[f"from_{i}"] = from_us
        params.update({f"type_{i}_{k}": t for k, t in enumerate(types)})
        if what != "latest":
            params[f"most_{i}"] = most
    shape = tuple((what, len(types)) for what, _from, types, _most in asks)
    row = conn.execute(_asks_statement(environment is not None, shape), params).one()
    return [None if v is None else int(v) for v in row]
