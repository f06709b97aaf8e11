"""Queries for guardrails: an organization's freezes and policies, and the recent deployments
of one service in one environment that a policy with history needs (each scoped to one
organization)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    text,
    union_all,
)

from trailmap.storage.tables import (
    DEPLOYMENTS_ONLY,
    events,
    guardrail_freezes,
    guardrail_policies,
)

__all__ = [
    "Answer",
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


# What the policies of one deployment ask, answered in one statement (and, when asked, the
# organization's enabled rule ids in it too: the whole check in one round trip). A round trip
# costs more than the counting itself (each count bounded, so cheap).
class Ask(NamedTuple):
    """Among the deployments and rollbacks (`DEPLOYMENT_EVENT_TYPES`) of the deployment's
    service and environment from `from_us`: "count", how many, up to `most`; "latest", the
    time of the latest; "rate", the rollbacks among them (up to `most`) and how many, up to
    where the rate cannot pass `max_percent` with `extra_rollbacks` more: max(min_deployments,
    int((rollbacks + extra_rollbacks) * 100 / max_percent) + 1), at most `most`, and none
    without a rollback (the rate's bound, computed by the database from the rollbacks it
    counted)."""

    what: str
    from_us: int
    most: int = 0
    max_percent: float = 0
    min_deployments: int = 0
    extra_rollbacks: int = 0


_EVERY_ROW = 2**62  # a LIMIT never reached

# A count or the latest time; a rate's (deployments, rollbacks); None: no deployment.
Answer = int | tuple[int, int] | None


def _window(name: str, with_environment: bool, *, only: str | None = None) -> list[Any]:
    c = events.c
    return [
        c.org_id == bindparam("org_id"),
        c.service == bindparam("service"),
        c.time_us >= bindparam(f"from_{name}"),
        c.time_us <= bindparam("to_us"),
        # As written in the partial index's condition (literals), so that the index serves.
        text(DEPLOYMENTS_ONLY + (f" AND type = '{only}'" if only else "")),
        c.subject == bindparam("environment") if with_environment else c.subject.is_(None),
        c.source.not_like(bindparam("detected_like")),
        ~and_(c.source == bindparam("own_source"), c.event_id == bindparam("own_event_id")),
    ]


def _bounded_count(name: str, with_environment: bool, most: Any, *, only: str | None = None) -> Any:
    counted = (
        select(literal(1).label("one"))
        .where(*_window(name, with_environment, only=only))
        .limit(most)
    )
    return select(func.count()).select_from(counted.subquery()).scalar_subquery()


def _rate_bound(i: int, rollbacks: Any) -> Any:
    """How many deployments a rate counts at most: int((rollbacks + extra) * 100 /
    max_percent) + min_deployments + 2, at least what `Ask` says (more by a few, as the
    dialects round a number to an integer differently, and the rollbacks counted once: the
    sum needs them once, where the maximum of the two would need them twice). Counting more
    never changes the verdict: past `Ask`'s bound the rate cannot pass its maximum."""
    seen = rollbacks + bindparam(f"extra_{i}")
    return cast(seen * bindparam(f"per_rollback_{i}"), BigInteger) + bindparam(f"least_{i}") + 2


def _no_number() -> Any:
    return cast(null(), BigInteger)


@cache
def _asks_statement(with_rule_ids: bool, with_environment: bool, shape: tuple[str, ...]) -> Any:
    c = events.c
    columns = ("what", "key", "a", "b")
    parts: list[Any] = []
    if with_rule_ids:
        f, p = guardrail_freezes.c, guardrail_policies.c
        for what, t in (("freeze", f), ("policy", p)):
            row: tuple[Any, ...] = (literal(what), t.id, _no_number(), _no_number())
            parts.append(
                select(*(v.label(n) for v, n in zip(row, columns, strict=True))).where(
                    t.org_id == bindparam("org_id"), t.enabled
                )
            )
    for i, what in enumerate(shape):
        second = _no_number()
        if what == "latest":
            # The max over a subquery with a LIMIT it never reaches: SQLite, which keeps no
            # statistics, does not flatten it and so plans it like the counts, on the index
            # of deployments; a max() or an ORDER BY time of its own would lead it to the
            # wider (organization, environment, time) index, walking every service's events.
            times = (
                select(c.time_us.label("t"))
                .where(*_window(str(i), with_environment))
                .limit(bindparam("every_row"))
                .subquery()
            )
            first = select(func.max(times.c.t)).scalar_subquery()
        elif what == "rate":
            # The rollbacks, counted once (a CTE) for the column and the deployments' bound.
            rollbacks = (
                select(_bounded_count(f"{i}_rb", with_environment, bindparam(f"most_{i}"),
                                      only="rollback").label("n"))
                .cte(f"rollbacks_{i}")
            )  # fmt: skip
            second = select(rollbacks.c.n).scalar_subquery()
            first = _bounded_count(str(i), with_environment, _rate_bound(i, second))
        else:
            first = _bounded_count(str(i), with_environment, bindparam(f"most_{i}"))
        row = (literal("ask"), literal(str(i)), cast(first, BigInteger), cast(second, BigInteger))
        parts.append(select(*(v.label(n) for v, n in zip(row, columns, strict=True))))
    return parts[0] if len(parts) == 1 else union_all(*parts)


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
    with_rule_ids: bool = False,
) -> tuple[list[tuple[str, str]] | None, list[Answer]]:
    """Each ask's answer, in one statement, among the events of one service in one
    environment up to `to_us` (without those whose source starts with `detected_prefix`,
    nor the event `own_key`). With `with_rule_ids`, the same statement reads the
    organization's enabled rules too, returned first as `enabled_rule_ids` returns them
    (else None)."""
    if not asks and not with_rule_ids:
        return None, []
    params: dict[str, Any] = {
        "org_id": org_id,
        "service": service,
        "to_us": to_us,
        "detected_like": detected_prefix + "%",
        "own_source": own_key[0],
        "own_event_id": own_key[1],
        "every_row": _EVERY_ROW,
    }
    if environment is not None:
        params["environment"] = environment
    for i, ask in enumerate(asks):
        params[f"from_{i}"] = ask.from_us
        if ask.what != "latest":
            params[f"most_{i}"] = ask.most
        if ask.what == "rate":
            params |= {
                f"from_{i}_rb": ask.from_us,
                f"extra_{i}": ask.extra_rollbacks,
                f"per_rollback_{i}": 100 / ask.max_percent if ask.max_percent else 0.0,
                f"least_{i}": ask.min_deployments,
            }
    shape = tuple(ask.what for ask in asks)
    statement = _asks_statement(with_rule_ids, environment is not None, shape)
    listed: list[tuple[str, str]] = []
    answers: list[Answer] = [None] * len(asks)
    for what, key, a, b in conn.execute(statement, params).all():
        if what != "ask":
            listed.append((what, key))
        elif asks[int(key)].what == "rate":
            answers[int(key)] = (int(a or 0), int(b or 0))
        else:
            answers[int(key)] = None if a is None else int(a)
    return (listed if with_rule_ids else None), answers
