"""What may set off a notification, and the one call the domains make when it happens.

The timeline calls `enqueue` for the events it stores (with their guardrail violations); the
verdict job calls it when a deployment's verdict is reached. Matching the organization's rules
and writing the outbox rows happens in the caller's transaction, so a notification is queued
if and only if what it tells of is stored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from trailmap import clock, ids
from trailmap.notifications.rules import reasons_for, strongest
from trailmap.storage import notifications as store

if TYPE_CHECKING:
    from trailmap.storage import Connection

__all__ = ["Trigger", "TriggerKind", "enqueue", "message_for"]

_EVENT_FIELDS: Final = (
    "id",
    "type",
    "source",
    "service",
    "environment",
    "severity",
    "version",
    "time",
    "description",
)
_MAX_VIOLATIONS: Final = 20

TriggerKind = Literal["event", "verdict"]


@dataclass(frozen=True, slots=True)
class Trigger:
    """`event`: an event just stored, as the REST API shows it (id, type, source, service,
    environment, severity, time, data ...), with the guardrail violations found on it (each
    a mapping with at least `kind` and `message`). `verdict`: a deployment's automatic verdict
    (`regressed`, `no_significant_change`, `improved`, `not_enough_data`) just reached."""

    kind: TriggerKind
    event: Mapping[str, Any]
    violations: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    verdict: str | None = None


def enqueue(conn: Connection, org_id: str, triggers: Sequence[Trigger], now_us: int) -> int:
    """Queue a delivery for each (matching rule's channel, trigger) in the caller's
    transaction; returns how many were queued. A trigger told to a channel twice (two rules,
    or the same trigger again) is queued once."""
    if not triggers:
        return 0
    rules = store.enabled_rules(conn, org_id)
    if not rules:
        return 0
    wanted: dict[tuple[str, str], tuple[str, list[str], Trigger]] = {}
    for trigger in triggers:
        key = _trigger_key(trigger)
        if key is None:
            continue
        for rule in rules:
            reasons = reasons_for(
                rule["match"] or {},
                trigger.kind,
                trigger.event,
                trigger.violations,
                trigger.verdict,
            )
            if not reasons:
                continue
            for channel_id in rule["channel_ids"] or ():
                found = wanted.get((channel_id, key))
                if found is None:
                    wanted[(channel_id, key)] = (rule["id"], list(reasons), trigger)
                else:
                    found[1].extend(reasons)
    if not wanted:
        return 0
    enabled = store.enabled_channels(conn, org_id, sorted({c for c, _ in wanted}))
    rows = [
        {
            "org_id": org_id,
            "id": ids.new_id(),
            "channel_id": channel_id,
            "rule_id": rule_id,
            "trigger_key": key,
            "message": message_for(trigger, strongest(reasons)),
            "status": "pending",
            "attempts": 0,
            "next_attempt_us": now_us,
            "holder": None,
            "lease_expires_us": None,
            "last_error": None,
            "created_us": now_us,
            "updated_us": now_us,
            "sent_us": None,
        }
        for (channel_id, key), (rule_id, reasons, trigger) in wanted.items()
        if channel_id in enabled
    ]
    return store.insert_outbox(conn, rows)


def _trigger_key(trigger: Trigger) -> str | None:
    # Trailmap's own id: `trailmap_id` in an event as the REST API shows it (the verdict
    # job's), `id` in a row just stored (ingestion's); the producer's `id` is unique only
    # within its source.
    event_id = trigger.event.get("trailmap_id") or trigger.event.get("id")
    if not isinstance(event_id, str) or not event_id:
        return None
    if trigger.kind == "verdict":
        return f"verdict:{event_id}:{trigger.verdict}"[:200]
    return f"event:{event_id}"[:200]


def _time(value: object) -> str | None:
    if isinstance(value, int):
        return clock.from_us(value).isoformat().replace("+00:00", "Z")
    return value if isinstance(value, str) else None


def message_for(trigger: Trigger, reason: str) -> dict[str, Any]:
    """What a notification says, whichever channel sends it: a title, a summary line, a
    severity on PagerDuty's scale (critical, error, warning, info), and the event."""
    event = trigger.event
    shown: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        value = event.get(name)
        if name == "environment" and value is None:
            value = event.get("subject")
        if name == "time":
            value = _time(value if value is not None else event.get("time_us"))
        if value is not None:
            shown[name] = value
    kind = str(shown.get("type") or "event")
    what = kind
    if shown.get("service"):
        what += f" of {shown['service']}"
    if shown.get("version"):
        what += f" {shown['version']}"
    if shown.get("environment"):
        what += (
            f" to {shown['environment']}"
            if kind.startswith("deploy")
            else f" in {shown['environment']}"
        )
    violations = [
        {"kind": str(v.get("kind", "")), "message": str(v.get("message", ""))}
        for v in list(trigger.violations)[:_MAX_VIOLATIONS]
    ]
    if reason == "regressed":
        title = f"Regressed: {what}"
        summary = f"The metrics after this {kind} regressed (verdict: {trigger.verdict})."
        severity = "error"
    elif reason == "incident":
        title = f"Incident: {what}"
        summary = str(shown.get("description") or f"An incident was reported: {what}.")
        severity = "critical"
    elif reason == "violation":
        count = len(trigger.violations)
        title = f"Guardrail {'violation' if count == 1 else 'violations'}: {what}"
        summary = "; ".join(v["message"] for v in violations) or title
        severity = "warning"
    else:
        title = what[:1].upper() + what[1:]
        summary = str(shown.get("description") or title)
        severity = _SEVERITY.get(str(shown.get("severity") or "").upper(), "info")
    return {
        "reason": reason,
        "title": title[:300],
        "summary": summary[:1000],
        "severity": severity,
        "event": shown,
        "violations": violations,
        "verdict": trigger.verdict,
    }


# The timeline's severities on PagerDuty's scale.
_SEVERITY: Final = {"CRITICAL": "critical", "MAJOR": "error", "MINOR": "warning", "LOW": "info"}
