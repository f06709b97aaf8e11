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
# (organization, id); a removed one is simply no longer listed. And each organization's
# latest `Rules` is kept with the ids it was made of: the check asks its counts as these rules
# would, in the statement that reads the ids, and uses them when the ids are the same (so a
# deployment's whole check is one round trip); else it makes the rules anew and asks again.
# Bounded, as any cache.
_PARSED: dict[tuple[str, str], Freeze | Policy] = {}
_BY_ORG: dict[str, tuple[frozenset[tuple[str, str]], Rules]] = {}
_MAX_PARSED: Final = 10_000


def load_rules(conn: Connection, org_id: str) -> Rules:
    """The organization's enabled freezes and policies, read in the caller's transaction: one
    query of their ids, and their rows only for those this process has not parsed yet."""
    return _rules_of(conn, org_id, store.enabled_rule_ids(conn, org_id))


def _rules_of(conn: Connection, org_id: str, listed: Sequence[tuple[str, str]]) -> Rules:
    ids = frozenset(listed)
    cached = _BY_ORG.get(org_id)
    if cached is not None and cached[0] == ids:
        return cached[1]
    if not listed:
        rules = Rules([], [])
    else:
        missing = [(what, i) for what, i in listed if (org_id, i) not in _PARSED]
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
        found = [_PARSED.get((org_id, rule_id)) for _, rule_id in listed]
        rules = Rules(
            [r for r in found if isinstance(r, Freeze)], [r for r in found if isinstance(r, Policy)]
        )
    if len(_BY_ORG) >= _MAX_PARSED:
        _BY_ORG.clear()
    _BY_ORG[org_id] = (ids, rules)
    return rules


def _rules_and_answers(
    conn: Connection, org_id: str, dep: Deployment, batch: Sequence[Deployment]
) -> tuple[Rules, dict[str, Any]]:
    """The organization's rules and what `dep`'s policies need counted, in one statement when
    the rules are those this process last saw for the organization (nearly always)."""
    cached = _BY_ORG.get(org_id)
    guess = cached[1] if cached is not None else Rules([], [])
    questions = guess.questions(dep) if dep.service is not None else []
    listed, found = _ask(conn, org_id, dep, _asks_of(questions, dep, batch), with_rule_ids=True)
    assert listed is not None
    rules = _rules_of(conn, org_id, listed)
    if rules is guess:
        return rules, _answers_from(dep, batch, questions, found)
    return rules, _answers(conn, org_id, rules, dep, batch)


# Past this many, counting stops: the policies' limits are far below.
_MOST_COUNTED: Final = 100_000


def _answers(
    conn: Connection, org_id: str, rules: Rules, dep: Deployment, batch: Sequence[Deployment]
) -> dict[str, Any]:
    """What `dep`'s policies need counted: stored deployments, each count bounded by where its
    policy decides (a busy service's history is never read row by row), all in one statement,
    and those of its batch judged before it. Deployments detected in traces are not counted."""
    questions = rules.questions(dep)
    if dep.service is None or not questions:
        return {}
    _listed, found = _ask(conn, org_id, dep, _asks_of(questions, dep, batch))
    return _answers_from(dep, batch, questions, found)


def _in_batch(q: Question, dep: Deployment, batch: Sequence[Deployment]) -> list[Deployment]:
    return [
        o
        for o in batch
        if q.from_us <= o.time_us <= dep.time_us and not o.source.startswith(DETECTED_SOURCE_PREFIX)
    ]


def _answers_from(
    dep: Deployment,
    batch: Sequence[Deployment],
    questions: Sequence[Question],
    found: Sequence[store.Answer],
) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for q, stored in zip(questions, found, strict=True):
        in_batch = _in_batch(q, dep, batch)
        if isinstance(stored, tuple):  # a rate: (deployments, rollbacks)
            answers[q.policy_id] = (
                stored[0] + len(in_batch),
                stored[1] + sum(o.type == "rollback" for o in in_batch),
            )
        elif q.what == "count":
            answers[q.policy_id] = (stored or 0) + len(in_batch)
        else:
            times = [t for t in (stored, *(o.time_us for o in in_batch)) if t is not None]
            answers[q.policy_id] = max(times) if times else None
    return answers


def _asks_of(
    questions: Sequence[Question], dep: Deployment, batch: Sequence[Deployment]
) -> list[store.Ask]:
    asks: list[store.Ask] = []
    for q in questions:
        if q.what == "count":
            asks.append(store.Ask("count", q.from_us, q.most))
        elif q.what == "latest":
            asks.append(store.Ask("latest", q.from_us))
        else:
            # A rate can pass its maximum only with a rollback: its deployments are counted
            # (by the database, in the same statement) only when there are rollbacks, and
            # only up to where the rate can no longer pass it.
            extra = (dep.type == "rollback") + sum(
                o.type == "rollback" for o in _in_batch(q, dep, batch)
            )
            asks.append(
                store.Ask(
                    "rate",
                    q.from_us,
                    _MOST_COUNTED,
                    max_percent=q.max_percent,
                    min_deployments=q.min_deployments,
                    extra_rollbacks=extra,
                )
            )
    return asks


def _ask(
    conn: Connection,
    org_id: str,
    dep: Deployment,
    asks: Sequence[store.Ask],
    *,
    with_rule_ids: bool = False,
) -> tuple[list[tuple[str, str]] | None, list[store.Answer]]:
    return store.answer_asks(
        conn,
        org_id,
        service=dep.service or "",
        environment=dep.environment,
        to_us=dep.time_us,
        detected_prefix=DETECTED_SOURCE_PREFIX,
        own_key=dep.key or ("", ""),
        asks=asks,
        with_rule_ids=with_rule_ids,
    )


def flag_deployments(
    conn: Connection, org_id: str, rows: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Judge the deployments among event rows about to be stored (in the ingest transaction):
    each one's violations are written into its row (`violations`, JSON text) and returned
    by its (source, event_id). Costs nothing without a deployment; with one, one statement
    reading the rule ids and the bounded counts of the policies that count earlier
    deployments (and one more statement for each further deployment of the batch)."""
    deps = [(row, _as_deployment(row)) for row in rows if row["type"] in DEPLOYMENT_TYPES]
    if not deps:
        return {}
    flagged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    judged: dict[tuple[str | None, str | None], list[Deployment]] = {}
    rules: Rules | None = None
    # In time order, each deployment of the batch counts for the later ones.
    for row, dep in sorted(deps, key=lambda pair: pair[1].time_us):
        same_batch = judged.setdefault((dep.service, dep.environment), [])
        if rules is None:  # the first: the rules' read and its counts in one statement
            rules, answers = _rules_and_answers(conn, org_id, dep, same_batch)
            if not rules:
                return {}
        else:
            answers = _answers(conn, org_id, rules, dep, same_batch)
        violations = rules.violations(dep, answers)
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
        rules, answers = _rules_and_answers(conn, principal.org_id, dep, ())
        return rules.violations(dep, answers) if rules else []

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
