"""Which stored events and verdicts are told to which channels: a rule's filters (event types,
severities, environments, services), what sets it off (`on`), and the message it queues."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

from trailmap import clock
from trailmap.errors import ErrorDetail, ValidationFailed

__all__ = [
    "FILTERS",
    "ON",
    "Reason",
    "Rule",
    "check_channel_ids",
    "check_match",
    "is_incident",
    "reasons_for",
    "strongest",
]

# What sets a rule off: any stored event that passes the filters (`event`), one stored with
# guardrail violations (`violation`), a deployment's automatic verdict of `regressed`, an
# incident (an event of type `incident`, or `incident.<something>`; `incident-resolved`
# closes one and is no incident itself).
Reason = Literal["event", "violation", "regressed", "incident"]
ON: Final[tuple[Reason, ...]] = get_args(Reason)
# The strongest reason names a notification told for several.
_RANK: Final = {"regressed": 3, "incident": 2, "violation": 1, "event": 0}
FILTERS: Final = ("event_types", "severities", "environments", "services")
# The timeline's severities (trailmap.timeline.events.SEVERITIES, a layer above this one).
_SEVERITIES: Final = ("LOW", "MINOR", "MAJOR", "CRITICAL")
_MAX_VALUES: Final = 100
_MAX_CHANNELS: Final = 20


def is_incident(event_type: str) -> bool:
    kind = event_type.strip().lower()
    return kind == "incident" or kind.startswith("incident.")


def strongest(reasons: Sequence[str]) -> str:
    return max(reasons, key=lambda r: _RANK.get(r, -1))


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    org_id: str
    name: str
    match: Mapping[str, Any]
    channel_ids: tuple[str, ...]
    enabled: bool
    created: datetime
    created_by: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Rule:
        return cls(
            id=row["id"],
            org_id=row["org_id"],
            name=row["name"],
            match=dict(row["match"] or {}),
            channel_ids=tuple(row["channel_ids"] or ()),
            enabled=bool(row["enabled"]),
            created=clock.from_us(row["created_us"]),
            created_by=row["created_by"],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            **{k: list(self.match.get(k, ())) for k in ("on", *FILTERS)},
            "channel_ids": list(self.channel_ids),
            "created": self.created.isoformat().replace("+00:00", "Z"),
            "created_by": self.created_by,
        }


def check_match(
    data: Mapping[str, Any], *, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A rule's `on` and filters from `data` (what it does not name is kept from `base`);
    a filter that is empty lets everything through."""
    match: dict[str, Any] = dict(base or {"on": ["event"]})
    problems: list[ErrorDetail] = []
    if "on" in data:
        given = data["on"]
        if (
            not isinstance(given, list)
            or not given
            or not all(isinstance(g, str) and g in ON for g in given)
        ):
            problems.append(
                ErrorDetail(field="on", message=f"a list of one or more of {', '.join(ON)}")
            )
        else:
            match["on"] = list(dict.fromkeys(given))
    for name in FILTERS:
        if name not in data:
            continue
        given = data[name]
        if given is None:
            match[name] = []
            continue
        if (
            not isinstance(given, list)
            or len(given) > _MAX_VALUES
            or not all(isinstance(g, str) and 0 < len(g.strip()) <= 200 for g in given)
        ):
            problems.append(
                ErrorDetail(
                    field=name,
                    message=f"a list of at most {_MAX_VALUES} texts (empty: any)",
                )
            )
            continue
        values = [g.strip() for g in given]
        if name == "severities":
            values = [v.upper() for v in values]
            wrong = [v for v in values if v not in _SEVERITIES]
            if wrong:
                problems.append(
                    ErrorDetail(field=name, message=f"severities are {', '.join(_SEVERITIES)}")
                )
                continue
        if name == "event_types":
            values = [v.lower() for v in values]
        match[name] = list(dict.fromkeys(values))
    if problems:
        raise ValidationFailed(
            f"The rule is not valid: {problems[0].field}: {problems[0].message}", details=problems
        )
    return match


def check_channel_ids(given: object) -> list[str]:
    if (
        not isinstance(given, list)
        or not 1 <= len(given) <= _MAX_CHANNELS
        or not all(isinstance(g, str) for g in given)
    ):
        raise ValidationFailed.field(
            "channel_ids", f"a list of 1 to {_MAX_CHANNELS} of the organization's channel ids"
        )
    return list(dict.fromkeys(given))


def _environment(event: Mapping[str, Any]) -> str | None:
    value = event.get("environment", event.get("subject"))
    return value if isinstance(value, str) else None


def _passes(match: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    def allowed(name: str, value: object) -> bool:
        wanted = match.get(name) or ()
        return not wanted or value in wanted

    kind = str(event.get("type") or "").lower()
    severity = event.get("severity")
    return (
        allowed("event_types", kind)
        and allowed("severities", severity.upper() if isinstance(severity, str) else None)
        and allowed("environments", _environment(event))
        and allowed("services", event.get("service"))
    )


def reasons_for(
    match: Mapping[str, Any],
    kind: str,
    event: Mapping[str, Any],
    violations: Sequence[Mapping[str, Any]],
    verdict: str | None,
) -> list[str]:
    """The reasons among the rule's `on` that this trigger gives; empty: the rule is not set
    off (or the event does not pass its filters)."""
    if not _passes(match, event):
        return []
    given: list[str] = []
    if kind == "event":
        given.append("event")
        if violations:
            given.append("violation")
        if is_incident(str(event.get("type") or "")):
            given.append("incident")
    elif kind == "verdict" and verdict == "regressed":
        given.append("regressed")
    wanted = match.get("on") or ("event",)
    return [r for r in given if r in wanted]
