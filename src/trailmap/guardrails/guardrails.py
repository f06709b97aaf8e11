"""An organization's guardrails: freezes and policies made, listed and removed by owners and
admins (the permission table's `manage_settings`, each change in the audit log); the check a
caller makes before deploying; and the flags put on deployments as they are stored."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import orjson

from trailmap import clock, ids
from trailmap.accounts.audit import Actor, record
from trailmap.accounts.principal import Principal
from trailmap.accounts.team import Authority
from trailmap.errors import NotFound, ValidationFailed
from trailmap.guardrails.evaluate import DEPLOYMENT_TYPES, Deployment, Earlier, Rates, Rules
from trailmap.guardrails.rules import Freeze, Policy, check_freeze, check_policy
from trailmap.storage import Connection, Database
from trailmap.storage import guardrails as store
from trailmap.timeline.events import DETECTED_SOURCE_PREFIX
from trailmap.timeline.times import TimeExpressionError, parse_event_time

__all__ = [
    "Check",
    "check_deployment",
    "create_freeze",
    "create_policy",
    "delete_freeze",
    "delete_policy",
    "flag_deployments",
    "list_freezes",
    "list_policies",
    "load_rules",
]

_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAX_NAME: Final = 200
_DAY_US: Final = 24 * 3600 * 1_000_000


# Rules are made and removed, never changed: each is parsed once per process and kept by
# (organization, id); a removed one is simply no longer listed. Bounded, as any cache.
_PARSED: dict[tuple[str, str], Freeze | Policy] = {}
_MAX_PARSED: Final = 10_000


def load_rules(conn: Connection, org_id: str) -> Rules:
    """The organization's enabled freezes and policies, read in the caller's transaction: one
    query of their ids, and their rows only for those this process has not parsed yet."""
    listed = store.enabled_rule_ids(conn, org_id)
    if not listed:
        return Rules([], [])
    missing = [(what, rule_id) for what, rule_id in listed if (org_id, rule_id) not in _PARSED]
    if missing:
        freeze_rows, policy_rows = store.get_rules(
            conn,
            org_id,
            [i for what, i in missing if what == "freeze"],
            [i for what, i in missing if what == "policy"],
        )
        if len(_PARSED) + len(missing) > _MAX_PARSED:
            _PARSED.clear()
        for row in freeze_rows:
            _PARSED[(org_id, row["id"])] = Freeze.from_row(row)
        for row in policy_rows:
            _PARSED[(org_id, row["id"])] = Policy.from_row(row)
    rules = [_PARSED.get((org_id, rule_id)) for _, rule_id in listed]
    return Rules(
        [r for r in rules if isinstance(r, Freeze)], [r for r in rules if isinstance(r, Policy)]
    )


def _earlier(
    conn: Connection, org_id: str, rules: Rules, deps: Sequence[Deployment]
) -> dict[tuple[str | None, str | None], list[Earlier]]:
    """For each (service, environment) among `deps`, its deployments stored in the reach of
    the policies that count them: one query per pair, none when no policy counts."""
    spans: dict[tuple[str | None, str | None], tuple[int, int]] = {}
    for dep in deps:
        reach = rules.lookback_us(dep)
        if reach is None or dep.service is None:
            continue
        pair = (dep.service, dep.environment)
        low, high = spans.get(pair, (dep.time_us - reach, dep.time_us))
        spans[pair] = (min(low, dep.time_us - reach), max(high, dep.time_us))
    found: dict[tuple[str | None, str | None], list[Earlier]] = {}
    for (service, environment), (low, high) in spans.items():
        rows = store.recent_deployments(
            conn,
            org_id,
            service=service or "",
            environment=environment,
            from_us=low,
            to_us=high,
            types=DEPLOYMENT_TYPES,
        )
        found[(service, environment)] = [
            Earlier(r[0], r[1], r[2], r[3], (r[3], r[4])) for r in rows
        ]
    return found


# Counting a busy service's week of deployments row by row cost more than all the rest of the
# check; the rate can pass its maximum only with a rollback, so the rollbacks are counted first
# (few rows, on the type index) and the deployments only up to where the rate is sure to pass.
_MOST_COUNTED: Final = 100_000


def _count(
    conn: Connection,
    org_id: str,
    dep: Deployment,
    from_us: int,
    types: tuple[str, ...],
    most: int,
) -> int:
    return store.count_deployments(
        conn,
        org_id,
        service=dep.service or "",
        environment=dep.environment,
        from_us=from_us,
        to_us=dep.time_us,
        types=types,
        detected_prefix=DETECTED_SOURCE_PREFIX,
        own_key=dep.key or ("", ""),
        most=most,
    )


def _rates(
    conn: Connection,
    org_id: str,
    rules: Rules,
    dep: Deployment,
    batch: Sequence[Deployment],
) -> Rates:
    """The rollback-rate counts of `dep`'s windows: stored, and the deployments of its batch
    judged before it. A total is exact while the rate could pass its policy's maximum, and a
    lower bound past that (which the policy cannot then flag)."""
    rates: dict[int, tuple[int, int]] = {}
    if dep.service is None:
        return rates
    for days, lowest_percent, least in rules.rate_windows(dep):
        from_us = dep.time_us - days * _DAY_US
        in_batch = [
            o
            for o in batch
            if from_us <= o.time_us <= dep.time_us
            and not o.source.startswith(DETECTED_SOURCE_PREFIX)
        ]

        rollbacks = _count(conn, org_id, dep, from_us, ("rollback",), _MOST_COUNTED) + sum(
            o.type == "rollback" for o in in_batch
        )
        with_this = rollbacks + (dep.type == "rollback")
        if with_this == 0:
            rates[days] = (0, 0)  # no rollback: no rate to pass, whatever the total
            continue
        # Past this many deployments (this one included) the rate is at most the lowest
        # maximum of the window's policies, and the least count they judge from is reached.
        enough = max(least, int(with_this * 100 / lowest_percent) + 1 if lowest_percent else least)
        stored = _count(conn, org_id, dep, from_us, DEPLOYMENT_TYPES, min(enough, _MOST_COUNTED))
        rates[days] = (stored + len(in_batch), rollbacks)
    return rates


def flag_deployments(
    conn: Connection, org_id: str, rows: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Judge the deployments among event rows about to be stored (in the ingest transaction):
    each one's violations are written into its row (`violations`, JSON text) and returned
    by its (source, event_id). Costs nothing without a deployment; one read of the rules
    with one, and one of earlier deployments only when a policy counts them."""
    deps = [(row, _as_deployment(row)) for row in rows if row["type"] in DEPLOYMENT_TYPES]
    if not deps:
        return {}
    rules = load_rules(conn, org_id)
    if not rules:
        return {}
    earlier = _earlier(conn, org_id, rules, [d for _, d in deps])
    flagged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    judged: dict[tuple[str | None, str | None], list[Deployment]] = {}
    # In time order, each deployment of the batch counts for the later ones.
    for row, dep in sorted(deps, key=lambda pair: pair[1].time_us):
        pair = (dep.service, dep.environment)
        before = earlier.get(pair)
        same_batch = judged.setdefault(pair, [])
        violations = rules.violations(
            dep, before or (), _rates(conn, org_id, rules, dep, same_batch)
        )
        same_batch.append(dep)
        if before is not None:
            before.append(
                Earlier(dep.time_us, dep.type, dep.version, dep.source, dep.key or ("", ""))
            )
        if violations:
            row["violations"] = orjson.dumps(violations).decode()
            flagged[(row["source"], row["event_id"])] = violations
    return flagged


def _as_deployment(row: dict[str, Any]) -> Deployment:
    return Deployment(
        service=row["service"],
        environment=row["subject"],
        time_us=row["time_us"],
        type=row["type"],
        version=row["version"],
        source=row["source"],
        key=(row["source"], row["event_id"]),
    )


class Check:
    """The answer to "would this deployment go against a guardrail?"."""

    __slots__ = ("deployment", "violations")

    def __init__(self, deployment: Deployment, violations: list[dict[str, Any]]) -> None:
        self.deployment = deployment
        self.violations = violations

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.deployment.service,
            "environment": self.deployment.environment,
            "time": clock.from_us(self.deployment.time_us).isoformat().replace("+00:00", "Z"),
            "clear": not self.violations,
            "violations": self.violations,
        }


def _text(value: object, name: str, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise ValidationFailed.field(name, f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > _MAX_NAME or "\x00" in value:
        raise ValidationFailed.field(name, f"{name} is a text of at most {_MAX_NAME} characters")
    return value


async def check_deployment(
    db: Database,
    principal: Principal,
    *,
    service: object,
    environment: object,
    time: object = None,
    now: datetime | None = None,
) -> Check:
    """Whether a deployment of `service` to `environment` at `time` (now when not given) would
    go against a freeze or a policy of the caller's organization. It only tells: nothing is
    stored, and only the caller decides whether to stop."""
    principal.require("read")
    now = now or clock.now()
    checked_service = _text(service, "service", required=True)
    checked_env = _text(environment, "environment", required=False)
    if time is None or time == "":
        when = now
    elif isinstance(time, str):
        try:
            when = parse_event_time(time, now=now)
        except TimeExpressionError as error:
            raise ValidationFailed.field("time", str(error)) from None
    else:
        raise ValidationFailed.field("time", "time is a text: an ISO 8601 time with its zone")
    dep = Deployment(service=checked_service, environment=checked_env, time_us=clock.to_us(when))

    def _check(conn: Connection) -> list[dict[str, Any]]:
        rules = load_rules(conn, principal.org_id)
        if not rules:
            return []
        earlier = _earlier(conn, principal.org_id, rules, [dep])
        rates = _rates(conn, principal.org_id, rules, dep, ())
        return rules.violations(dep, earlier.get((dep.service, dep.environment), ()), rates)

    return Check(dep, await db.read_one(_check))


# -- freezes and policies, made and removed by owners and admins ----------------------------


def _by(by: Actor) -> str:
    return by.name[:400]


async def create_freeze(
    db: Database, org_id: str, body: object, *, who: Authority, by: Actor
) -> Freeze:
    who.require("manage_settings")
    row = check_freeze(body, clock.now())
    row |= {
        "org_id": org_id,
        "id": ids.new_id(),
        "created_by": _by(by),
        "created_us": clock.now_us(),
    }

    def _create(conn: Connection) -> Freeze:
        store.insert_freeze(conn, row)
        made = Freeze.from_row(row)
        record(
            conn, org_id, "guardrail.freeze_created", by, target=made.name, details=made.as_json()
        )
        return made

    return await db.write(_create)


async def create_policy(
    db: Database, org_id: str, body: object, *, who: Authority, by: Actor
) -> Policy:
    who.require("manage_settings")
    row = check_policy(body)
    row |= {
        "org_id": org_id,
        "id": ids.new_id(),
        "created_by": _by(by),
        "created_us": clock.now_us(),
    }

    def _create(conn: Connection) -> Policy:
        store.insert_policy(conn, row)
        made = Policy.from_row(row)
        record(
            conn, org_id, "guardrail.policy_created", by, target=made.name, details=made.as_json()
        )
        return made

    return await db.write(_create)


async def list_freezes(db: Database, org_id: str, *, who: Authority) -> list[Freeze]:
    """Every freeze of the organization (members may read them: they deploy under them)."""
    who.require("read")
    return [Freeze.from_row(r) for r in await db.read_one(store.list_freezes, org_id)]


async def list_policies(db: Database, org_id: str, *, who: Authority) -> list[Policy]:
    who.require("read")
    return [Policy.from_row(r) for r in await db.read_one(store.list_policies, org_id)]


async def delete_freeze(
    db: Database, org_id: str, freeze_id: str, *, who: Authority, by: Actor
) -> Freeze:
    who.require("manage_settings")

    def _delete(conn: Connection) -> Freeze:
        row = store.delete_freeze(conn, org_id, freeze_id) if _ID.match(freeze_id) else None
        if row is None:
            raise NotFound("No freeze of this organization has that id.")
        gone = Freeze.from_row(row)
        record(
            conn, org_id, "guardrail.freeze_deleted", by, target=gone.name, details={"id": gone.id}
        )
        return gone

    return await db.write(_delete)


async def delete_policy(
    db: Database, org_id: str, policy_id: str, *, who: Authority, by: Actor
) -> Policy:
    who.require("manage_settings")

    def _delete(conn: Connection) -> Policy:
        row = store.delete_policy(conn, org_id, policy_id) if _ID.match(policy_id) else None
        if row is None:
            raise NotFound("No policy of this organization has that id.")
        gone = Policy.from_row(row)
        record(
            conn, org_id, "guardrail.policy_deleted", by, target=gone.name, details={"id": gone.id}
        )
        return gone

    return await db.write(_delete)
