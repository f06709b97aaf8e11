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
from trailmap.guardrails.evaluate import DEPLOYMENT_TYPES, Deployment, Question, Rules
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


# Past this many, counting stops: the policies' limits are far below.
_MOST_COUNTED: Final = 100_000


def _answers(
    conn: Connection, org_id: str, rules: Rules, dep: Deployment, batch: Sequence[Deployment]
) -> dict[str, Any]:
    """What `dep`'s policies need counted: stored deployments, each count bounded by where its
    policy decides (a busy service's history is never read row by row), all in one statement,
    and those of its batch judged before it. Deployments detected in traces are not counted.
    A rollback rate can pass its maximum only with a rollback: its deployments are counted,
    in a second statement, only when there are rollbacks."""
    answers: dict[str, Any] = {}
    questions = rules.questions(dep)
    if dep.service is None or not questions:
        return answers
    found = _ask(conn, org_id, dep, [_ask_of(q) for q in questions])
    rates: list[tuple[Question, list[Deployment], int]] = []
    for q, stored in zip(questions, found, strict=True):
        in_batch = [
            o
            for o in batch
            if q.from_us <= o.time_us <= dep.time_us
            and not o.source.startswith(DETECTED_SOURCE_PREFIX)
        ]
        if q.what == "count":
            answers[q.policy_id] = (stored or 0) + len(in_batch)
        elif q.what == "latest":
            times = [t for t in (stored, *(o.time_us for o in in_batch)) if t is not None]
            answers[q.policy_id] = max(times) if times else None
        else:
            rollbacks = (stored or 0) + sum(o.type == "rollback" for o in in_batch)
            with_this = rollbacks + (dep.type == "rollback")
            answers[q.policy_id] = (len(in_batch), rollbacks)
            if with_this:
                enough = q.min_deployments
                if q.max_percent:
                    enough = max(enough, int(with_this * 100 / q.max_percent) + 1)
                rates.append((q, in_batch, min(enough, _MOST_COUNTED)))
    if rates:
        totals = _ask(
            conn,
            org_id,
            dep,
            [("count", q.from_us, DEPLOYMENT_TYPES, most) for q, _batch, most in rates],
        )
        for (q, in_batch, _most), total in zip(rates, totals, strict=True):
            answers[q.policy_id] = ((total or 0) + len(in_batch), answers[q.policy_id][1])
    return answers


def _ask_of(q: Question) -> store.Ask:
    if q.what == "count":
        return ("count", q.from_us, DEPLOYMENT_TYPES, q.most)
    if q.what == "latest":
        return ("latest", q.from_us, DEPLOYMENT_TYPES, 0)
    return ("count", q.from_us, ("rollback",), _MOST_COUNTED)  # a rate: its rollbacks first


def _ask(
    conn: Connection, org_id: str, dep: Deployment, asks: Sequence[store.Ask]
) -> list[int | None]:
    return store.answer_asks(
        conn,
        org_id,
        service=dep.service or "",
        environment=dep.environment,
        to_us=dep.time_us,
        detected_prefix=DETECTED_SOURCE_PREFIX,
        own_key=dep.key or ("", ""),
        asks=asks,
    )


def flag_deployments(
    conn: Connection, org_id: str, rows: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Judge the deployments among event rows about to be stored (in the ingest transaction):
    each one's violations are written into its row (`violations`, JSON text) and returned
    by its (source, event_id). Costs nothing without a deployment; with one, a read of the
    rule ids, and bounded counts for the policies that count earlier deployments."""
    deps = [(row, _as_deployment(row)) for row in rows if row["type"] in DEPLOYMENT_TYPES]
    if not deps:
        return {}
    rules = load_rules(conn, org_id)
    if not rules:
        return {}
    flagged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    judged: dict[tuple[str | None, str | None], list[Deployment]] = {}
    # In time order, each deployment of the batch counts for the later ones.
    for row, dep in sorted(deps, key=lambda pair: pair[1].time_us):
        same_batch = judged.setdefault((dep.service, dep.environment), [])
        violations = rules.violations(dep, _answers(conn, org_id, rules, dep, same_batch))
        same_batch.append(dep)
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
        return rules.violations(dep, _answers(conn, principal.org_id, rules, dep, ()))

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
