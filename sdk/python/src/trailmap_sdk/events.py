"""The change event as Trailmap takes it (a CloudEvent 1.0), built once so every retry of it
carries the same id and time."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["Event", "Severity", "event_json"]

Severity = Literal["LOW", "MINOR", "MAJOR", "CRITICAL"]


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Event:
    """One change: `type` (deployment, rollback, config-change, incident, ...) and `source`
    (a URI-reference such as `//github.com/acme/checkout`) are required.

    `id` and `time` are fixed when the event is made, not when it is sent: a retry of a
    request that did land is then a duplicate, stored once, and keeps the time of the change.
    `subject` is the environment. `description` goes to `data.description`.
    """

    type: str
    source: str
    time: datetime | str = field(default_factory=_now)
    id: str = field(default_factory=_new_id)
    subject: str | None = None
    severity: Severity | None = None
    version: str | None = None
    service: str | None = None
    description: str | None = None
    data: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.time, datetime) and self.time.utcoffset() is None:
            raise ValueError("Event.time needs a time zone, e.g. datetime.now(UTC)")

    def to_json(self) -> dict[str, Any]:
        """The CloudEvent JSON object `POST /api/v1/events` takes."""
        when = self.time
        body: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "time": _iso(when) if isinstance(when, datetime) else when,
        }
        optional = {
            "subject": self.subject,
            "severity": self.severity,
            "version": self.version,
            "service": self.service,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        data = dict(self.data) if self.data is not None else None
        if self.description is not None:
            data = {**(data or {}), "description": self.description}
        if data is not None:
            body["data"] = data
        return body


def _iso(when: datetime) -> str:
    text = when.isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def event_json(event: Event | Mapping[str, Any]) -> dict[str, Any]:
    """An event as JSON; a plain mapping gets what it lacks (`specversion`, an `id`, the time
    now) here, once, before the first attempt."""
    if isinstance(event, Event):
        return event.to_json()
    body = dict(event)
    body.setdefault("specversion", "1.0")
    body.setdefault("id", _new_id())
    body.setdefault("time", _iso(_now()))
    return body
