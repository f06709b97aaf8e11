"""What each delivery to an integration became: accepted (with the events it made), a
duplicate of an earlier one, ignored (and why) or refused (and why); the newest 200 are kept."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

from trailmap import clock, ids
from trailmap.accounts.organizations import Organization
from trailmap.accounts.principal import Principal
from trailmap.accounts.team import Authority
from trailmap.integrations.integrations import Integration, get_integration, is_integration_id
from trailmap.storage import Connection, Database
from trailmap.storage import integrations as store

__all__ = [
    "KEEP_DELIVERIES",
    "OUTCOMES",
    "TRIM_EVERY",
    "Delivery",
    "Outcome",
    "WebhookTarget",
    "find_webhook_target",
    "list_deliveries",
    "purge_deliveries_before",
    "record_delivery",
    "record_delivery_in",
]

Outcome = Literal["accepted", "duplicate", "ignored", "refused"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
KEEP_DELIVERIES: Final = 200  # per integration: the newest
# The older ones are deleted with one delivery in TRIM_EVERY (at random), so that an
# integration holds at most a few more between trims, and a delivery seldom pays for it.
TRIM_EVERY: Final = 16
_MAX_REASON: Final = 2000


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    delivery_id: str
    event_name: str | None
    received: datetime
    outcome: Outcome
    reason: str | None
    event_ids: tuple[str, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Delivery:
        return cls(
            id=row["id"],
            delivery_id=row["delivery_id"],
            event_name=row["event_name"],
            received=clock.from_us(row["received_us"]),
            outcome=row["outcome"],
            reason=row["reason"],
            event_ids=tuple(row["event_ids"] or ()),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "delivery_id": self.delivery_id,
            "event_name": self.event_name,
            "received": self.received.isoformat().replace("+00:00", "Z"),
            "outcome": self.outcome,
            "reason": self.reason,
            "event_ids": list(self.event_ids),
        }


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What a delivery is checked and recorded against: the integration, its organization,
    and the earlier record of the same delivery, if it came before."""

    integration: Integration
    org: Organization
    earlier: Delivery | None

    def principal(self) -> Principal:
        """Who the integration's events are written as: the organization, allowed to write
        and no more, named after the integration."""
        return Principal(
            org_id=self.org.id,
            org_slug=self.org.slug,
            plan=self.org.plan,
            retention_days=self.org.retention_days,
            scope="READ_WRITE",
            key_name=f"integration {self.integration.name}",
        )


async def find_webhook_target(
    db: Database, integration_id: str, delivery_id: str | None
) -> WebhookTarget | None:
    """The integration a webhook URL names, with its organization and the delivery's earlier
    record (one read); None when no integration has the id."""
    if not is_integration_id(integration_id):
        return None
    # One SELECT by unique keys: on SQLite it runs right here, without a thread's hop.
    found = await db.read_point(store.webhook_target, integration_id, _clip(delivery_id))
    if found is None:
        return None
    row, org, earlier = found
    return WebhookTarget(
        integration=Integration.from_row(row),
        org=Organization.from_row(org),
        earlier=None if earlier is None else Delivery.from_row(earlier),
    )


def _keep() -> int | None:
    """How many to keep, when this record is the one that trims the older ones."""
    return KEEP_DELIVERIES if random.randrange(TRIM_EVERY) == 0 else None  # noqa: S311 - not a secret


def _clip(delivery_id: str | None) -> str | None:
    return None if delivery_id is None else delivery_id[:200]


def _row(
    integration: Integration,
    *,
    delivery_id: str,
    event_name: str | None,
    outcome: Outcome,
    reason: str | None,
    event_ids: Sequence[str],
) -> dict[str, Any]:
    return {
        "org_id": integration.org_id,
        "id": ids.new_id(),
        "integration_id": integration.id,
        "delivery_id": _clip(delivery_id),
        "event_name": None if event_name is None else event_name[:100],
        "received_us": clock.now_us(),
        "outcome": outcome,
        "reason": None if reason is None else reason[:_MAX_REASON],
        "event_ids": list(event_ids),
    }


async def record_delivery(
    db: Database,
    integration: Integration,
    *,
    delivery_id: str,
    event_name: str | None,
    outcome: Outcome,
    reason: str | None = None,
    event_ids: Sequence[str] = (),
) -> Delivery:
    """Note what the delivery became (replacing an earlier attempt's record)."""
    row = _row(
        integration,
        delivery_id=delivery_id,
        event_name=event_name,
        outcome=outcome,
        reason=reason,
        event_ids=event_ids,
    )
    await db.write(store.record_delivery, row, keep=_keep())
    return Delivery.from_row(row)


def record_delivery_in(
    conn: Connection,
    integration: Integration,
    *,
    delivery_id: str,
    event_name: str | None,
    outcome: Outcome,
    reason: str | None = None,
    event_ids: Sequence[str] = (),
) -> None:
    """`record_delivery` inside the caller's transaction (the one storing its events)."""
    row = _row(
        integration,
        delivery_id=delivery_id,
        event_name=event_name,
        outcome=outcome,
        reason=reason,
        event_ids=event_ids,
    )
    store.record_delivery(conn, row, keep=_keep())


async def list_deliveries(
    db: Database, org_id: str, integration_id: str, *, who: Authority, limit: int = 50
) -> list[Delivery]:
    """The integration's newest deliveries first."""
    integration = await get_integration(db, org_id, integration_id, who=who)
    limit = max(1, min(limit, KEEP_DELIVERIES))
    rows = await db.read_one(store.list_deliveries, org_id, integration.id, limit=limit)
    return [Delivery.from_row(r) for r in rows]


async def purge_deliveries_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Delete the organization's delivery records older than `cutoff_us` (its window)."""
    return await db.write_in_chunks(store.purge_deliveries_before, org_id, cutoff_us)
