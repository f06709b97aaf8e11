"""Freeze windows and deployment policies as the domain holds them: read from their rows,
checked when an owner or admin makes one, shown as the API answers them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import lru_cache
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

from trailmap import clock
from trailmap.errors import ErrorDetail, ValidationFailed
from trailmap.timeline.times import TimeExpressionError, parse_event_time, resolve_timezone

__all__ = [
    "POLICY_KINDS",
    "WEEKDAYS",
    "Freeze",
    "Policy",
    "PolicyKind",
    "Recurrence",
    "Scope",
    "check_freeze",
    "check_policy",
    "zone",
]

PolicyKind = Literal[
    "blocked_days",
    "allowed_hours",
    "daily_cap",
    "cooldown",
    "max_rollback_rate",
    "max_velocity_per_hour",
]
POLICY_KINDS: Final[tuple[PolicyKind, ...]] = get_args(PolicyKind)
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES: Final = {
    **{d: i for i, d in enumerate(WEEKDAYS)},
    **{
        n: i
        for i, n in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MAX_NAME: Final = 100
_MAX_REASON: Final = 1000
_MAX_SCOPE: Final = 100
_MAX_SCOPE_VALUE: Final = 200


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` (checked when the rule was made)."""
    return resolve_timezone(name)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which deployments a rule is about: empty lists mean every environment, every service.
    Names match whatever their case, as the timeline's filters do."""

    environments: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    _envs: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _services: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def of(cls, environments: Sequence[str], services: Sequence[str]) -> Scope:
        return cls(
            tuple(environments),
            tuple(services),
            frozenset(e.casefold() for e in environments),
            frozenset(s.casefold() for s in services),
        )

    def covers(self, service: str | None, environment: str | None) -> bool:
        if self._envs and (environment is None or environment.casefold() not in self._envs):
            return False
        return not self._services or (service is not None and service.casefold() in self._services)

    def as_json(self) -> dict[str, Any]:
        return {"environments": list(self.environments), "services": list(self.services)}


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A weekly window: from `start` on each of `days` to `end` on `end_day` (the first one
    after the start), or, without `end_day`, to `end` the same day (the next day when `end`
    is not after `start`: a window that crosses midnight). Wall times in `timezone`."""

    days: tuple[int, ...]
    start: time
    end: time
    end_day: int | None
    timezone: str

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "days": [WEEKDAYS[d] for d in self.days],
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "timezone": self.timezone,
        }
        if self.end_day is not None:
            out["end_day"] = WEEKDAYS[self.end_day]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Recurrence:
        end_day = data.get("end_day")
        return cls(
            days=tuple(_DAY_NAMES[d] for d in data["days"]),
            start=_clock(data["start"]),
            end=_clock(data["end"]),
            end_day=None if end_day is None else _DAY_NAMES[end_day],
            timezone=data["timezone"],
        )


@dataclass(frozen=True, slots=True)
class Freeze:
    id: str
    name: str
    reason: str
    scope: Scope
    enabled: bool
    created: datetime
    created_by: str
    starts_us: int | None = None
    ends_us: int | None = None
    recurrence: Recurrence | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Freeze:
        recurrence = row.get("recurrence")
        return cls(
            id=row["id"],
            name=row["name"],
            reason=row["reason"],
            scope=Scope.of(row["environments"], row["services"]),
            enabled=bool(row["enabled"]),
            created=clock.from_us(row["created_us"]),
            created_by=row["created_by"],
            starts_us=row["starts_us"],
            ends_us=row["ends_us"],
            recurrence=None if recurrence is None else Recurrence.from_json(recurrence),
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "reason": self.reason,
            **self.scope.as_json(),
            "enabled": self.enabled,
            "created": _iso(self.created),
            "created_by": self.created_by,
        }
        if self.recurrence is not None:
            out["recurrence"] = self.recurrence.as_json()
        else:
            out["start"] = _iso_us(self.starts_us)
            out["end"] = _iso_us(self.ends_us)
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    kind: PolicyKind
    name: str
    settings: Mapping[str, Any]
    scope: Scope
    enabled: bool
    created: datetime
    created_by: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Policy:
        return cls(
            id=row["id"],
            kind=row["kind"],
            name=row["name"],
            settings=row["settings"],
            scope=Scope.of(row["environments"], row["services"]),
            enabled=bool(row["enabled"]),
            created=clock.from_us(row["created_us"]),
            created_by=row["created_by"],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "settings": dict(self.settings),
            **self.scope.as_json(),
            "enabled": self.enabled,
            "created": _iso(self.created),
            "created_by": self.created_by,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _iso_us(us: int | None) -> str | None:
    return None if us is None else _iso(clock.from_us(us))


def _clock(text: str) -> time:
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(text)
    return time(int(match[1]), int(match[2]))


# -- checking what an owner or admin sends ---------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[ErrorDetail] = []

    def add(self, name: str, message: str) -> None:
        self.items.append(ErrorDetail(field=name, message=message))

    def raise_any(self, what: str) -> None:
        if self.items:
            first = self.items[0]
            raise ValidationFailed(f"{what}: {first.field}: {first.message}", details=self.items)


def _name(body: Mapping[str, Any], problems: _Problems) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add("name", "name is required: a text of 1 to 100 characters")
        return ""
    if len(name.strip()) > _MAX_NAME:
        problems.add("name", f"name is at most {_MAX_NAME} characters")
    return name.strip()[:_MAX_NAME]


def _scope_list(body: Mapping[str, Any], key: str, problems: _Problems) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.add(key, f"{key} is a list of names (empty: every one)")
        return []
    if len(value) > _MAX_SCOPE or any(len(v) > _MAX_SCOPE_VALUE for v in value):
        problems.add(key, f"{key} holds at most {_MAX_SCOPE} names of 200 characters at most")
        return []
    return sorted({v.strip() for v in value})


def _enabled(body: Mapping[str, Any], problems: _Problems) -> bool:
    value = body.get("enabled", True)
    if not isinstance(value, bool):
        problems.add("enabled", "enabled is true or false")
        return True
    return value


def _timezone(value: object, name: str, problems: _Problems) -> str:
    if value is None:
        return "UTC"
    if not isinstance(value, str):
        problems.add(name, "a time zone is an IANA name such as Europe/Paris")
        return "UTC"
    try:
        return zone(value).key
    except TimeExpressionError as error:
        problems.add(name, str(error))
        return "UTC"


def _day_list(value: object, name: str, problems: _Problems) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, str) and d.lower() in _DAY_NAMES for d in value)
    ):
        problems.add(name, "days is a list of weekdays: mon, tue, wed, thu, fri, sat, sun")
        return []
    numbers = sorted({_DAY_NAMES[d.lower()] for d in value})
    return [WEEKDAYS[n] for n in numbers]


def _clock_text(value: object, name: str, problems: _Problems) -> str:
    if not isinstance(value, str) or _CLOCK.match(value) is None:
        problems.add(name, f"{name.rsplit('.', 1)[-1]} is a wall time HH:MM, 00:00 to 23:59")
        return "00:00"
    return value


def _int(
    settings: Mapping[str, Any],
    key: str,
    problems: _Problems,
    *,
    low: int,
    high: int,
    default: int | None = None,
) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.add(f"settings.{key}", f"{key} is a whole number from {low} to {high}")
        return low
    return value


def check_freeze(body: object, now: datetime) -> dict[str, Any]:
    """A freeze's stored columns (besides ids and who made it) from what was sent, or a
    ValidationFailed naming every field that is wrong."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "Send a JSON object: name, reason, and start and end (one-off) or recurrence "
            "(weekly), with optional environments and services."
        )
    problems = _Problems()
    row: dict[str, Any] = {
        "name": _name(body, problems),
        "environments": _scope_list(body, "environments", problems),
        "services": _scope_list(body, "services", problems),
        "enabled": _enabled(body, problems),
        "starts_us": None,
        "ends_us": None,
        "recurrence": None,
    }
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > _MAX_REASON:
        problems.add("reason", f"reason is a text of at most {_MAX_REASON} characters")
        reason = ""
    row["reason"] = reason.strip()
    recurrence = body.get("recurrence")
    one_off = body.get("start") is not None or body.get("end") is not None
    if recurrence is not None and one_off:
        problems.add("recurrence", "a freeze is one-off (start, end) or recurring, not both")
    elif recurrence is not None:
        row["recurrence"] = _check_recurrence(recurrence, problems)
    else:
        row["starts_us"], row["ends_us"] = _check_window(body, now, problems)
    problems.raise_any("The freeze is not valid")
    return row


def _check_window(body: Mapping[str, Any], now: datetime, problems: _Problems) -> tuple[int, int]:
    bounds: list[int] = []
    for key in ("start", "end"):
        value = body.get(key)
        if not isinstance(value, str):
            problems.add(key, f"{key} is required for a one-off freeze: a time with its zone")
            continue
        try:
            bounds.append(clock.to_us(parse_event_time(value, now=now)))
        except TimeExpressionError as error:
            problems.add(key, str(error))
    if len(bounds) != 2:
        return 0, 0
    if bounds[1] <= bounds[0]:
        problems.add("end", "end must be after start")
    return bounds[0], bounds[1]


def _check_recurrence(value: object, problems: _Problems) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        problems.add(
            "recurrence", "recurrence is an object: days, start, end, end_day (optional), timezone"
        )
        return None
    unknown = sorted(set(value) - {"days", "start", "end", "end_day", "timezone"})
    if unknown:
        problems.add(f"recurrence.{unknown[0]}", f"{unknown[0]} is not a recurrence setting")
    out: dict[str, Any] = {
        "days": _day_list(value.get("days"), "recurrence.days", problems),
        "start": _clock_text(value.get("start"), "recurrence.start", problems),
        "end": _clock_text(value.get("end"), "recurrence.end", problems),
        "timezone": _timezone(value.get("timezone"), "recurrence.timezone", problems),
    }
    if value.get("end_day") is not None:
        days = _day_list(value.get("end_day"), "recurrence.end_day", problems)
        if len(days) > 1:
            problems.add("recurrence.end_day", "end_day is one weekday")
        out["end_day"] = days[0] if days else None
    elif out["start"] == out["end"]:
        problems.add("recurrence.end", "end must differ from start (or give end_day)")
    return out


def check_policy(body: object) -> dict[str, Any]:
    """A policy's stored columns (besides ids and who made it) from what was sent."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "Send a JSON object: kind, name and settings, with optional environments and services."
        )
    problems = _Problems()
    kind = body.get("kind")
    if kind not in POLICY_KINDS:
        problems.add("kind", f"kind is one of {', '.join(POLICY_KINDS)}")
    row: dict[str, Any] = {
        "kind": kind,
        "name": _name(body, problems),
        "environments": _scope_list(body, "environments", problems),
        "services": _scope_list(body, "services", problems),
        "enabled": _enabled(body, problems),
        "settings": {},
    }
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        problems.add("settings", "settings is an object")
    elif kind in POLICY_KINDS:
        row["settings"] = _check_settings(kind, settings, problems)
    problems.raise_any("The policy is not valid")
    return row


_SETTINGS: Final[Mapping[str, frozenset[str]]] = {
    "blocked_days": frozenset({"days", "timezone"}),
    "allowed_hours": frozenset({"start", "end", "timezone"}),
    "daily_cap": frozenset({"max", "timezone"}),
    "cooldown": frozenset({"minutes"}),
    "max_rollback_rate": frozenset({"max_percent", "window_days", "min_deployments"}),
    "max_velocity_per_hour": frozenset({"max"}),
}


def _check_settings(kind: str, settings: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    unknown = sorted(set(settings) - _SETTINGS[kind])
    if unknown:
        problems.add(
            f"settings.{unknown[0]}",
            f"{unknown[0]} is not a setting of {kind}; it takes "
            + ", ".join(sorted(_SETTINGS[kind])),
        )
    tz = _timezone(settings.get("timezone"), "settings.timezone", problems)
    if kind == "blocked_days":
        return {"days": _day_list(settings.get("days"), "settings.days", problems), "timezone": tz}
    if kind == "allowed_hours":
        start = _clock_text(settings.get("start"), "settings.start", problems)
        end = _clock_text(settings.get("end"), "settings.end", problems)
        if start == end and "settings.start" not in {p.field for p in problems.items}:
            problems.add("settings.end", "end must differ from start")
        return {"start": start, "end": end, "timezone": tz}
    if kind == "daily_cap":
        return {"max": _int(settings, "max", problems, low=1, high=10_000), "timezone": tz}
    if kind == "cooldown":
        return {"minutes": _int(settings, "minutes", problems, low=1, high=7 * 24 * 60)}
    if kind == "max_velocity_per_hour":
        return {"max": _int(settings, "max", problems, low=1, high=10_000)}
    percent = settings.get("max_percent")
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent < 100:
        problems.add("settings.max_percent", "max_percent is a number from 0 to under 100")
        percent = 0
    return {
        "max_percent": percent,
        "window_days": _int(settings, "window_days", problems, low=1, high=90, default=7),
        "min_deployments": _int(
            settings, "min_deployments", problems, low=1, high=10_000, default=5
        ),
    }
