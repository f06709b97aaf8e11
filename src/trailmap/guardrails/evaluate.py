"""Whether one deployment goes against an organization's freezes and policies: pure, given the
rules, the deployment and the earlier deployments of its service in its environment.

Wall times are read in each rule's IANA zone with zoneinfo, so a window follows the clocks
through a daylight-saving change; a wall time the change skips (02:30 on a spring-forward
night) is taken with the offset in force before it, so it lands an hour later on the clock,
and one the change repeats means its first occurrence (zoneinfo's fold=0)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final

from trailmap import clock
from trailmap.guardrails.rules import WEEKDAYS, Freeze, Policy, zone
from trailmap.storage.tables import DEPLOYMENT_EVENT_TYPES

__all__ = [
    "DEPLOYMENT_TYPES",
    "Answers",
    "Deployment",
    "Question",
    "Rules",
]

# Per policy id, what was counted for it (`Question`): a number of earlier deployments, the
# time of the latest (None: none), or a rate's (deployments, rollbacks).
Answers = Mapping[str, Any]

# What counts as a deployment: `deployment` (succeeded or failed: it was attempted) and
# `rollback`, a deployment of an earlier version. `deployment-started` marks a start and is
# followed by its `deployment`, so it is not counted twice.
DEPLOYMENT_TYPES: Final = DEPLOYMENT_EVENT_TYPES  # as the storage's index of them holds
_US: Final = 1_000_000
_HOUR_US: Final = 3600 * _US
_DAY_US: Final = 24 * _HOUR_US
_DAY_LONG: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment to judge. `key` is its (source, event_id) when it is an event, so that its
    own stored copy (a redelivery) is not taken for an earlier deployment."""

    service: str | None
    environment: str | None
    time_us: int
    type: str = "deployment"
    version: str | None = None
    source: str = ""
    key: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Question:
    """What a policy needs counted among the earlier deployments of the deployment's service
    in its environment, in [from_us, its time]: `count` (up to `most`: past it the policy
    cannot flag), `latest` (the time of the latest), or `rate` (deployments up to `most`,
    and rollbacks). Deployments detected in traces are not counted: with a producer's
    report of the same change they would count it twice."""

    policy_id: str
    what: str  # count, latest or rate
    from_us: int
    most: int = 0
    max_percent: float = 0
    min_deployments: int = 0


def _iso(us: int, tz: Any) -> str:
    return clock.from_us(us).astimezone(tz).isoformat()


def _local(us: int, tz_name: str) -> datetime:
    return clock.from_us(us).astimezone(zone(tz_name))


def _wall_us(day: date, at: time, tz_name: str) -> int:
    return clock.to_us(datetime.combine(day, at, tzinfo=zone(tz_name)))


def _hm(at: time) -> str:
    return at.strftime("%H:%M")


def _where(dep: Deployment) -> str:
    service = dep.service or "(no service)"
    return f"{service} in {dep.environment}" if dep.environment else service


class Rules:
    """An organization's enabled freezes and policies, ready to judge many deployments."""

    __slots__ = ("freezes", "policies")

    def __init__(self, freezes: Sequence[Freeze], policies: Sequence[Policy]) -> None:
        # In the order they were made, so that violations are listed the same way each time.
        self.freezes = sorted((f for f in freezes if f.enabled), key=lambda f: (f.created, f.id))
        self.policies = sorted((p for p in policies if p.enabled), key=lambda p: (p.created, p.id))

    def __bool__(self) -> bool:
        return bool(self.freezes or self.policies)

    def questions(self, dep: Deployment) -> list[Question]:
        """What the policies covering `dep` need counted, each bounded."""
        asked: list[Question] = []
        for policy in self.policies:
            if not policy.scope.covers(dep.service, dep.environment):
                continue
            settings = policy.settings
            if policy.kind == "daily_cap":
                local = _local(dep.time_us, settings["timezone"])
                day_start = _wall_us(local.date(), time(), settings["timezone"])
                asked.append(Question(policy.id, "count", day_start, settings["max"]))
            elif policy.kind == "max_velocity_per_hour":
                asked.append(
                    Question(policy.id, "count", dep.time_us - _HOUR_US + 1, settings["max"])
                )
            elif policy.kind == "cooldown":
                window = settings["minutes"] * 60 * _US
                asked.append(Question(policy.id, "latest", dep.time_us - window + 1))
            elif policy.kind == "max_rollback_rate":
                asked.append(
                    Question(
                        policy.id,
                        "rate",
                        dep.time_us - settings["window_days"] * _DAY_US,
                        max_percent=settings["max_percent"],
                        min_deployments=settings["min_deployments"],
                    )
                )
        return asked

    def violations(self, dep: Deployment, answers: Answers | None = None) -> list[dict[str, Any]]:
        """Every freeze and policy `dep` goes against, freezes first, each as the API shows
        it; `answers` holds what its `questions` counted (nothing counted: none earlier)."""
        found: list[dict[str, Any]] = []
        for freeze in self.freezes:
            if freeze.scope.covers(dep.service, dep.environment):
                hit = _freeze_window(freeze, dep.time_us)
                if hit is not None:
                    found.append(_freeze_violation(freeze, hit))
        answers = answers or {}
        for policy in self.policies:
            if not policy.scope.covers(dep.service, dep.environment):
                continue
            message = _POLICY_CHECKS[policy.kind](policy, dep, answers.get(policy.id))
            if message is not None:
                found.append(
                    {"kind": policy.kind, "id": policy.id, "name": policy.name, "message": message}
                )
        return found


# -- freezes ----------------------------------------------------------------------------------


def _freeze_window(freeze: Freeze, t: int) -> tuple[int, int, Any] | None:
    """The window of `freeze` that holds instant `t` (start, end, zone shown), if one does."""
    rec = freeze.recurrence
    if rec is None:
        start, end = freeze.starts_us, freeze.ends_us
        if start is not None and end is not None and start <= t < end:
            return start, end, zone("UTC")
        return None
    tz = zone(rec.timezone)
    today = clock.from_us(t).astimezone(tz).date()
    # A window lasts at most a week: one starting up to 7 days before today may hold t.
    for back in range(8):
        day = today - timedelta(days=back)
        if day.weekday() not in rec.days:
            continue
        if rec.end_day is not None:
            ahead = (rec.end_day - day.weekday()) % 7
            if ahead == 0 and rec.end <= rec.start:
                ahead = 7
        else:
            ahead = 1 if rec.end <= rec.start else 0
        start = _wall_us(day, rec.start, rec.timezone)
        end = _wall_us(day + timedelta(days=ahead), rec.end, rec.timezone)
        if start <= t < end:
            return start, end, tz
    return None


def _freeze_violation(freeze: Freeze, hit: tuple[int, int, Any]) -> dict[str, Any]:
    start, end, tz = hit
    window = {"start": _iso(start, tz), "end": _iso(end, tz)}
    reason = f" ({freeze.reason})" if freeze.reason else ""
    return {
        "kind": "freeze",
        "id": freeze.id,
        "name": freeze.name,
        "message": (
            f"{freeze.name}: change freeze from {window['start']} to {window['end']}{reason}"
        ),
        "reason": freeze.reason,
        "window": window,
    }


# -- policies ---------------------------------------------------------------------------------


def _blocked_days(policy: Policy, dep: Deployment, _: object) -> str | None:
    tz_name = policy.settings["timezone"]
    local = _local(dep.time_us, tz_name)
    if WEEKDAYS[local.weekday()] not in policy.settings["days"]:
        return None
    return f"{policy.name}: no deployments on {_DAY_LONG[local.weekday()]} ({tz_name})"


def _allowed_hours(policy: Policy, dep: Deployment, _: object) -> str | None:
    settings = policy.settings
    local = _local(dep.time_us, settings["timezone"])
    start, end = (time.fromisoformat(settings["start"]), time.fromisoformat(settings["end"]))
    now = local.time().replace(tzinfo=None)
    inside = start <= now < end if start < end else (now >= start or now < end)
    if inside:
        return None
    return (
        f"{policy.name}: deployments are allowed from {_hm(start)} to {_hm(end)} "
        f"{settings['timezone']}; it is {_hm(now)} there"
    )


def _daily_cap(policy: Policy, dep: Deployment, earlier: int | None) -> str | None:
    settings = policy.settings
    count = 1 + (earlier or 0)
    if count <= settings["max"]:
        return None
    local = _local(dep.time_us, settings["timezone"])
    return (
        f"{policy.name}: more than {settings['max']} deployments of {_where(dep)} on "
        f"{local.date().isoformat()} ({settings['timezone']}); the cap is {settings['max']} a day"
    )


def _cooldown(policy: Policy, dep: Deployment, latest: int | None) -> str | None:
    if latest is None:
        return None
    minutes = (dep.time_us - latest) / (60 * _US)
    return (
        f"{policy.name}: {minutes:.0f} min after the previous deployment of {_where(dep)}; "
        f"the cooldown is {policy.settings['minutes']} min"
    )


def _velocity(policy: Policy, dep: Deployment, earlier: int | None) -> str | None:
    count = 1 + (earlier or 0)
    if count <= policy.settings["max"]:
        return None
    return (
        f"{policy.name}: more than {policy.settings['max']} deployments of {_where(dep)} "
        f"within an hour; the most allowed is {policy.settings['max']}"
    )


def _rollback_rate(policy: Policy, dep: Deployment, counted: tuple[int, int] | None) -> str | None:
    settings = policy.settings
    earlier, earlier_rollbacks = counted or (0, 0)
    total = 1 + earlier
    rollbacks = (dep.type == "rollback") + earlier_rollbacks
    if total < settings["min_deployments"] or rollbacks * 100 <= settings["max_percent"] * total:
        return None
    return (
        f"{policy.name}: {rollbacks} rollbacks in {total} deployments of {_where(dep)} over "
        f"{settings['window_days']} days ({100 * rollbacks / total:.0f}%); the most allowed is "
        f"{settings['max_percent']}%"
    )


_POLICY_CHECKS: Final[dict[str, Callable[[Policy, Deployment, Any], str | None]]] = {
    "blocked_days": _blocked_days,
    "allowed_hours": _allowed_hours,
    "daily_cap": _daily_cap,
    "cooldown": _cooldown,
    "max_velocity_per_hour": _velocity,
    "max_rollback_rate": _rollback_rate,
}
