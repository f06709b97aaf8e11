"""What one forge webhook delivery becomes: CloudEvents for the timeline, or why it was ignored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["DeliveryMapper", "ForgeContext", "Mapped"]


@dataclass(frozen=True, slots=True)
class ForgeContext:
    """What the integration knows beside the payload.

    `delivery_id` is the forge's idempotency key (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`):
    every event made from a delivery carries an id derived from it, so a redelivery is a
    duplicate. `services` maps a repository's full name (`owner/name`, `group/project`) to a
    service; unmapped repositories use their own name. `default_branch` overrides the
    payload's when the integration says so.
    """

    delivery_id: str
    services: Mapping[str, str] = field(default_factory=dict)
    default_branch: str | None = None


@dataclass(frozen=True, slots=True)
class Mapped:
    """CloudEvent dicts ready for `timeline.ingest.ingest_events`, or a reason to ignore."""

    events: tuple[dict[str, Any], ...] = ()
    ignored: str | None = None

    @classmethod
    def ignore(cls, reason: str) -> Mapped:
        return cls(ignored=reason)


class DeliveryMapper(Protocol):
    """A forge adapter's mapping: pure, the event name header's value and the decoded body in."""

    def __call__(
        self, event_name: str, payload: Mapping[str, Any], context: ForgeContext
    ) -> Mapped: ...
