"""What may set off a notification, and the one call the domains make when it happens.

The timeline calls `enqueue` for the events it stores (with their guardrail violations); the
verdict job calls it when a deployment's verdict is reached. Matching the organization's rules
and writing the outbox rows happens in the caller's transaction, so a notification is queued
if and only if what it tells of is stored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from trailmap.storage import Connection

__all__ = ["Trigger", "TriggerKind", "enqueue"]

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
    transaction; returns how many were queued. Built by the notifications work (issue 22)."""
    del conn, org_id, triggers, now_us
    return 0
