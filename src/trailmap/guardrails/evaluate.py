"""Whether one deployment goes against an organization's freezes and policies: pure, given the
rules, the deployment and the earlier deployments of its service in its environment.

Wall times are read in each rule's IANA zone with zoneinfo, so a window follows the clocks
through a daylight-saving change; a wall time the change skips (02:30 on a spring-forward
night) is taken with the offset in force before it, so it lands an hour later on the clock,
and one the change repeats means its first occurrence (zoneinfo's fold=0)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final

from trailmap import clock
from trailmap.guardrails.rules import WEEKDAYS, Freeze, Policy, zone
from trailmap.timeline.events import DETECTED_SOURCE_PREFIX

__all__ = [
    "DEPLOYMENT_TYPES",
    "Deployment",
    "Earlier",
    "Rates",
    "Rules",
]

# Per window (days): the deployments and the rollbacks stored in it before the deployment
# judged, those detected in traces left out (they would count a change twice).
Rates = Mapping[int, tuple[int, int]]

# What counts as a deployment: `deployment` (succeeded or failed: it was attempted) and
# `rollback`, a deployment of an earlier version. `deployment-started` marks a start and is
# followed by its `deployment`, so it is not counted twice.
DEPLOYMENT_TYPES: Final = ("deployment", "rollback")
_US: Final = 1_000_000
_HOUR_US: Final = 3600 * _US
_DAY_US: Final = 24 * _HOUR_US
# A deployment detected in traces and one reported by a pipeline within this long, with the
# same version, are one change (as the timeline counts them).
_SAME_CHANGE_US: Final = 15 * 60 * _US
# The policies that look at earlier deployments one by one, over a day at most; the
# rollback rate's window (days) is counted by the database instead (`Rates`).
_HISTORY_KINDS: Final = frozenset({"daily_cap", "cooldown", "max_velocity_per_hour"})
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
class Earlier:
    """An earlier deployment of the same service in the same environment."""

    time_us: int
    type: str
    version: str | None
    source: str
    key: tuple[str, str]


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

    __slots__ = ("_history_policies", "freezes", "policies")

    def __init__(self, freezes: Sequence[Freeze], policies: Sequence[Policy]) -> None:
        self.freezes = [f for f in freezes if f.enabled]
        self.policies = [p for p in policies if p.enabled]
        self._history_policies = [p for p in self.policies if p.kind in _HISTORY_KINDS]

    def __bool__(self) -> bool:
        return bool(self.freezes or self.policies)

    def lookback_us(self, dep: Deployment) -> int | None:
        """How far back the earlier deployments this one's policies count reach (None: no
        policy that covers it counts any)."""
        reach: int | None = None
        for policy in self._history_policies:
            if not policy.scope.covers(dep.service, dep.environment):
                continue
            settings = policy.settings
            if policy.kind == "daily_cap":
                local = _local(dep.time_us, settings["timezone"])
                back = dep.time_us - _wall_us(local.date(), time(), settings["timezone"])
            elif policy.kind == "cooldown":
                back = settings["minutes"] * 60 * _US
            else:
                back = _HOUR_US
            reach = back if reach is None else max(reach, back)
        return reach

    def rate_windows(self, dep: Deployment) -> list[tuple[int, float, int]]:
        """The windows (days) of the rollback-rate policies that cover `dep`, each with the
        lowest maximum (percent) and the largest minimum of deployments among them."""
        windows: dict[int, tuple[float, int]] = {}
        for p in self.policies:
            if p.kind == "max_rollback_rate" and p.scope.covers(dep.service, dep.environment):
                days = p.settings["window_days"]
                low, least = windows.get(days, (100.0, 0))
                windows[days] = (
                    min(low, p.settings["max_percent"]),
                    max(least, p.settings["min_deployments"]),
                )
        return [(days, low, least) for days, (low, least) in sorted(windows.items())]

    def violations(
        self, dep: Deployment, earlier: Iterable[Earlier] = (), rates: Rates | None = None
    ) -> list[dict[str, Any]]:
        """Every freeze and policy `dep` goes against, freezes first, each as the API shows it."""
        found: list[dict[str, Any]] = []
        for freeze in self.freezes:
            if freeze.scope.covers(dep.service, dep.environment):
                hit = _freeze_window(freeze, dep.time_us)
                if hit is not None:
                    found.append(_freeze_violation(freeze, hit))
        if not self.policies:
            return found
        history: list[Earlier] | None = None
        for policy in self.policies:
            if not policy.scope.covers(dep.service, dep.environment):
                continue
            if history is None and policy.kind in _HISTORY_KINDS:
                history = _distinct_changes(dep, earlier)
            if policy.kind == "max_rollback_rate":
                counted = (rates or {}).get(policy.settings["window_days"], (0, 0))
                message = _rollback_rate(policy, dep, counted)
            else:
                message = _POLICY_CHECKS[policy.kind](policy, dep, history or [])
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


def _distinct_changes(dep: Deployment, earlier: Iterable[Earlier]) -> list[Earlier]:
    """The earlier deployments, each change once: not `dep` itself (its own stored copy, or
    its twin detected in traces), nor a detected twin of another one."""
    rows = [e for e in earlier if e.key != dep.key and e.time_us <= dep.time_us]
    reported = [e for e in rows if not e.source.startswith(DETECTED_SOURCE_PREFIX)]
    dep_detected = dep.source.startswith(DETECTED_SOURCE_PREFIX)

    def twin(a_version: str | None, a_us: int, b: Earlier) -> bool:
        return (
            a_version is not None
            and a_version == b.version
            and abs(a_us - b.time_us) <= _SAME_CHANGE_US
        )

    kept: list[Earlier] = []
    for e in rows:
        detected = e.source.startswith(DETECTED_SOURCE_PREFIX)
        if detected != dep_detected and twin(dep.version, dep.time_us, e):
            continue
        if detected and any(twin(e.version, e.time_us, r) for r in reported):
            continue
        kept.append(e)
    return kept


def _blocked_days(policy: Policy, dep: Deployment, _: list[Earlier]) -> str | None:
    tz_name = policy.settings["timezone"]
    local = _local(dep.time_us, tz_name)
    if WEEKDAYS[local.weekday()] not in policy.settings["days"]:
        return None
    return f"{policy.name}: no deployments on {_DAY_LONG[local.weekday()]} ({tz_name})"


def _allowed_hours(policy: Policy, dep: Deployment, _: list[Earlier]) -> str | None:
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


def _daily_cap(policy: Policy, dep: Deployment, history: list[Earlier]) -> str | None:
    settings = policy.settings
    local = _local(dep.time_us, settings["timezone"])
    day_start = _wall_us(local.date(), time(), settings["timezone"])
    count = 1 + sum(1 for e in history if e.time_us >= day_start)
    if count <= settings["max"]:
        return None
    return (
        f"{policy.name}: deployment {count} of {_where(dep)} on {local.date().isoformat()} "
        f"({settings['timezone']}); the cap is {settings['max']} a day"
    )


def _cooldown(policy: Policy, dep: Deployment, history: list[Earlier]) -> str | None:
    window = policy.settings["minutes"] * 60 * _US
    recent = [e.time_us for e in history if dep.time_us - e.time_us < window]
    if not recent:
        return None
    minutes = (dep.time_us - max(recent)) / (60 * _US)
    return (
        f"{policy.name}: {minutes:.0f} min after the previous deployment of {_where(dep)}; "
        f"the cooldown is {policy.settings['minutes']} min"
    )


def _velocity(policy: Policy, dep: Deployment, history: list[Earlier]) -> str | None:
    count = 1 + sum(1 for e in history if dep.time_us - e.time_us < _HOUR_US)
    if count <= policy.settings["max"]:
        return None
    return (
        f"{policy.name}: {count} deployments of {_where(dep)} within an hour; "
        f"the most allowed is {policy.settings['max']}"
    )


def _rollback_rate(policy: Policy, dep: Deployment, counted: tuple[int, int]) -> str | None:
    settings = policy.settings
    total = 1 + counted[0]
    rollbacks = (dep.type == "rollback") + counted[1]
    if total < settings["min_deployments"] or rollbacks * 100 <= settings["max_percent"] * total:
        return None
    return (
        f"{policy.name}: {rollbacks} rollbacks in {total} deployments of {_where(dep)} over "
        f"{settings['window_days']} days ({100 * rollbacks / total:.0f}%); the most allowed is "
        f"{settings['max_percent']}%"
    )


_POLICY_CHECKS: Final = {
    "blocked_days": _blocked_days,
    "allowed_hours": _allowed_hours,
    "daily_cap": _daily_cap,
    "cooldown": _cooldown,
    "max_velocity_per_hour": _velocity,
}
