"""An organization's notification channels, rules and deliveries, managed by owners and
admins (the permission table's `manage_settings`), each change in the audit log. The
channels, rules and outbox themselves live in `trailmap.notifications`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from trailmap import clock, ids
from trailmap.accounts.audit import Actor, record
from trailmap.accounts.team import Authority
from trailmap.errors import Conflict, NotFound, ValidationFailed
from trailmap.notifications.channels import (
    KINDS,
    Channel,
    Kind,
    check_channel_settings,
    check_destinations,
    is_id,
    seal_secrets,
)
from trailmap.notifications.rules import Rule, check_channel_ids, check_match
from trailmap.notifications.senders import Delivery, SendFailed, send
from trailmap.notifications.triggers import Trigger, message_for
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Connection, Database
from trailmap.storage import notifications as store

__all__ = [
    "STATUSES",
    "Outgoing",
    "create_channel",
    "create_rule",
    "delete_channel",
    "delete_rule",
    "get_channel",
    "get_delivery",
    "get_rule",
    "list_channels",
    "list_deliveries",
    "list_rules",
    "purge_notifications_before",
    "retry_delivery",
    "send_test_notification",
    "update_channel",
    "update_rule",
]

STATUSES: Final = ("pending", "sent", "failed")
_NAME_LIMIT: Final = 100
_MAX_LIMIT: Final = 500


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A delivery in the outbox, as the API shows it."""

    row: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        def iso(us: int | None) -> str | None:
            return None if us is None else clock.from_us(us).isoformat().replace("+00:00", "Z")

        r = self.row
        message = r["message"] or {}
        return {
            "id": r["id"],
            "channel": {
                "id": r["channel_id"],
                "name": r["channel_name"],
                "kind": r["channel_kind"],
            },
            "rule_id": r["rule_id"],
            "trigger": r["trigger_key"],
            "status": r["status"],
            "attempts": r["attempts"],
            "next_attempt": iso(r["next_attempt_us"]) if r["status"] == "pending" else None,
            "last_error": r["last_error"],
            "created": iso(r["created_us"]),
            "sent": iso(r["sent_us"]),
            "title": message.get("title"),
            "reason": message.get("reason"),
        }


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > _NAME_LIMIT:
        raise ValidationFailed.field("name", f"a name of 1 to {_NAME_LIMIT} characters")
    return name.strip()


def _check_enabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed.field("enabled", "true or false")
    return value


def _check_kind(kind: object) -> Kind:
    if kind not in KINDS:
        raise ValidationFailed.field("kind", f"one of {', '.join(KINDS)}")
    return kind


def _unknown(body: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(str(k) for k in set(body) - set(known))
    if extra:
        raise ValidationFailed.field(extra[0], f"unknown; send {', '.join(known)}")


# -- channels ---------------------------------------------------------------------------------


def _get_channel(conn: Connection, org_id: str, channel_id: str) -> Channel:
    row = store.get_channel(conn, org_id, channel_id) if is_id(channel_id) else None
    if row is None:
        raise NotFound("No notification channel of this organization has that id.")
    return Channel.from_row(row)


def _channel_details(channel: Channel) -> dict[str, Any]:
    return {"id": channel.id, "kind": channel.kind, "name": channel.name}


async def create_channel(
    db: Database,
    org_id: str,
    body: object,
    *,
    who: Authority,
    by: Actor,
    secret_key: str | None,
    outbound: OutboundPolicy,
) -> tuple[Channel, str | None]:
    """A new channel; for a webhook, the signing secret the server made (when none was
    given) is returned now and never again."""
    who.require("manage_settings")
    if not isinstance(body, Mapping):
        raise ValidationFailed("Send a JSON object with kind, name and settings.")
    _unknown(body, ("kind", "name", "enabled", "settings"))
    kind = _check_kind(body.get("kind"))
    name = _check_name(body.get("name"))
    enabled = _check_enabled(body.get("enabled", True))
    shown, kept, made = check_channel_settings(kind, body.get("settings"))
    await check_destinations(outbound, kind, shown, kept)
    sealed = seal_secrets(secret_key, kept)
    now_us = clock.now_us()
    row = {
        "org_id": org_id,
        "id": ids.new_id(),
        "kind": kind,
        "name": name,
        "settings": shown,
        "secrets_encrypted": sealed,
        "enabled": enabled,
        "created_by": by.name[:400],
        "created_us": now_us,
        "updated_us": now_us,
    }

    def _create(conn: Connection) -> Channel:
        if store.name_taken(conn, "channel", org_id, name):
            raise Conflict(f"A notification channel named {name!r} exists already.")
        store.insert_channel(conn, row)
        made_channel = Channel.from_row(row)
        record(
            conn,
            org_id,
            "notification_channel.created",
            by,
            target=name,
            details=_channel_details(made_channel),
        )
        return made_channel

    return await db.write(_create), made


async def list_channels(db: Database, org_id: str, *, who: Authority) -> list[Channel]:
    who.require("manage_settings")
    return [Channel.from_row(r) for r in await db.read_one(store.list_channels, org_id)]


async def get_channel(db: Database, org_id: str, channel_id: str, *, who: Authority) -> Channel:
    who.require("manage_settings")
    return await db.read_one(_get_channel, org_id, channel_id)


async def update_channel(
    db: Database,
    org_id: str,
    channel_id: str,
    body: object,
    *,
    who: Authority,
    by: Actor,
    secret_key: str | None,
    outbound: OutboundPolicy,
) -> Channel:
    """Change a channel's name, enabled flag or settings (a secret not named is kept)."""
    who.require("manage_settings")
    if not isinstance(body, Mapping) or not body:
        raise ValidationFailed("Send a JSON object with name, enabled and/or settings.")
    _unknown(body, ("name", "enabled", "settings"))
    current = await db.read_one(_get_channel, org_id, channel_id)
    values: dict[str, Any] = {}
    if "name" in body:
        values["name"] = _check_name(body["name"])
    if "enabled" in body:
        values["enabled"] = _check_enabled(body["enabled"])
    if "settings" in body:
        shown, kept, _ = check_channel_settings(
            current.kind,
            body["settings"],
            base=current.public_settings,
            base_secrets=current.secrets(secret_key),
        )
        await check_destinations(outbound, current.kind, shown, kept)
        values["settings"] = shown
        values["secrets_encrypted"] = seal_secrets(secret_key, kept)
    values["updated_us"] = clock.now_us()

    def _update(conn: Connection) -> Channel:
        found = _get_channel(conn, org_id, channel_id)
        if "name" in values and store.name_taken(
            conn, "channel", org_id, values["name"], other_than=found.id
        ):
            raise Conflict(f"A notification channel named {values['name']!r} exists already.")
        store.update_channel(conn, org_id, found.id, values)
        changed = _get_channel(conn, org_id, found.id)
        details = _channel_details(changed) | {
            "changed": sorted(k for k in values if k != "updated_us")
        }
        record(
            conn, org_id, "notification_channel.updated", by, target=changed.name, details=details
        )
        return changed

    return await db.write(_update)


async def delete_channel(
    db: Database, org_id: str, channel_id: str, *, who: Authority, by: Actor
) -> Channel:
    """Remove the channel and its deliveries; rules keep their other channels."""
    who.require("manage_settings")

    def _delete(conn: Connection) -> Channel:
        found = _get_channel(conn, org_id, channel_id)
        store.delete_channel(conn, org_id, found.id)
        for rule in store.list_rules(conn, org_id):
            if found.id in (rule["channel_ids"] or ()):
                left = [c for c in rule["channel_ids"] if c != found.id]
                store.update_rule(conn, org_id, rule["id"], {"channel_ids": left})
        record(
            conn,
            org_id,
            "notification_channel.deleted",
            by,
            target=found.name,
            details=_channel_details(found),
        )
        return found

    return await db.write(_delete)


async def send_test_notification(
    db: Database,
    org_id: str,
    channel_id: str,
    *,
    who: Authority,
    by: Actor,
    secret_key: str | None,
    outbound: OutboundPolicy,
    timeout_seconds: float,
) -> dict[str, Any]:
    """Send a test notification now (not through the outbox): whether the receiver took it,
    and if not, why."""
    who.require("manage_settings")
    channel = await db.read_one(_get_channel, org_id, channel_id)
    test_id = ids.new_id()
    now_us = clock.now_us()
    trigger = Trigger(
        kind="event",
        event={
            "id": test_id,
            "type": "test",
            "source": "trailmap",
            "description": f"A test of the notification channel {channel.name}.",
            "time_us": now_us,
        },
    )
    message = message_for(trigger, "event")
    message["title"] = f"Trailmap test notification for {channel.name}"
    delivery = Delivery(
        id=test_id,
        kind=channel.kind,
        settings=channel.public_settings,
        secrets=channel.secrets(secret_key),
        message=message,
        created_us=now_us,
    )
    error = None
    try:
        await send(delivery, policy=outbound, timeout_seconds=timeout_seconds)
    except SendFailed as failed:
        error = str(failed)

    def _audit(conn: Connection) -> None:
        details = _channel_details(channel) | {"sent": error is None}
        record(
            conn, org_id, "notification_channel.tested", by, target=channel.name, details=details
        )

    await db.write(_audit)
    return {"sent": error is None, "error": error, "delivery_id": test_id}


# -- rules ------------------------------------------------------------------------------------


def _get_rule(conn: Connection, org_id: str, rule_id: str) -> Rule:
    row = store.get_rule(conn, org_id, rule_id) if is_id(rule_id) else None
    if row is None:
        raise NotFound("No notification rule of this organization has that id.")
    return Rule.from_row(row)


def _check_channels_exist(conn: Connection, org_id: str, channel_ids: list[str]) -> None:
    for channel_id in channel_ids:
        if not is_id(channel_id) or store.get_channel(conn, org_id, channel_id) is None:
            raise ValidationFailed.field(
                "channel_ids", f"{channel_id!r} is no notification channel of this organization"
            )


_RULE_FIELDS: Final = (
    "name",
    "enabled",
    "on",
    "event_types",
    "severities",
    "environments",
    "services",
    "channel_ids",
)


async def create_rule(
    db: Database, org_id: str, body: object, *, who: Authority, by: Actor
) -> Rule:
    who.require("manage_settings")
    if not isinstance(body, Mapping):
        raise ValidationFailed("Send a JSON object with name, on, channel_ids and filters.")
    _unknown(body, _RULE_FIELDS)
    name = _check_name(body.get("name"))
    enabled = _check_enabled(body.get("enabled", True))
    match = check_match(body)
    channel_ids = check_channel_ids(body.get("channel_ids"))
    now_us = clock.now_us()
    row = {
        "org_id": org_id,
        "id": ids.new_id(),
        "name": name,
        "match": match,
        "channel_ids": channel_ids,
        "enabled": enabled,
        "created_by": by.name[:400],
        "created_us": now_us,
        "updated_us": now_us,
    }

    def _create(conn: Connection) -> Rule:
        if store.name_taken(conn, "rule", org_id, name):
            raise Conflict(f"A notification rule named {name!r} exists already.")
        _check_channels_exist(conn, org_id, channel_ids)
        store.insert_rule(conn, row)
        made = Rule.from_row(row)
        record(
            conn,
            org_id,
            "notification_rule.created",
            by,
            target=name,
            details={"id": made.id, "name": name, "on": match["on"]},
        )
        return made

    return await db.write(_create)


async def list_rules(db: Database, org_id: str, *, who: Authority) -> list[Rule]:
    who.require("manage_settings")
    return [Rule.from_row(r) for r in await db.read_one(store.list_rules, org_id)]


async def get_rule(db: Database, org_id: str, rule_id: str, *, who: Authority) -> Rule:
    who.require("manage_settings")
    return await db.read_one(_get_rule, org_id, rule_id)


async def update_rule(
    db: Database, org_id: str, rule_id: str, body: object, *, who: Authority, by: Actor
) -> Rule:
    who.require("manage_settings")
    if not isinstance(body, Mapping) or not body:
        raise ValidationFailed("Send a JSON object with the rule's fields to change.")
    _unknown(body, _RULE_FIELDS)

    def _update(conn: Connection) -> Rule:
        current = _get_rule(conn, org_id, rule_id)
        values: dict[str, Any] = {"match": check_match(body, base=current.match)}
        if "name" in body:
            values["name"] = _check_name(body["name"])
            if store.name_taken(conn, "rule", org_id, values["name"], other_than=current.id):
                raise Conflict(f"A notification rule named {values['name']!r} exists already.")
        if "enabled" in body:
            values["enabled"] = _check_enabled(body["enabled"])
        if "channel_ids" in body:
            values["channel_ids"] = check_channel_ids(body["channel_ids"])
            _check_channels_exist(conn, org_id, values["channel_ids"])
        values["updated_us"] = clock.now_us()
        store.update_rule(conn, org_id, current.id, values)
        changed = _get_rule(conn, org_id, current.id)
        record(
            conn,
            org_id,
            "notification_rule.updated",
            by,
            target=changed.name,
            details={"id": changed.id, "changed": sorted(k for k in body)},
        )
        return changed

    return await db.write(_update)


async def delete_rule(
    db: Database, org_id: str, rule_id: str, *, who: Authority, by: Actor
) -> Rule:
    who.require("manage_settings")

    def _delete(conn: Connection) -> Rule:
        found = _get_rule(conn, org_id, rule_id)
        store.delete_rule(conn, org_id, found.id)
        record(
            conn,
            org_id,
            "notification_rule.deleted",
            by,
            target=found.name,
            details={"id": found.id, "name": found.name},
        )
        return found

    return await db.write(_delete)


# -- deliveries -------------------------------------------------------------------------------


async def list_deliveries(
    db: Database,
    org_id: str,
    *,
    who: Authority,
    status: str | None = None,
    channel_id: str | None = None,
    limit: int = 50,
) -> list[Outgoing]:
    """The organization's deliveries, newest first, with their status and last error."""
    who.require("manage_settings")
    if status is not None and status not in STATUSES:
        raise ValidationFailed.field("status", f"one of {', '.join(STATUSES)}")
    if channel_id is not None and not is_id(channel_id):
        raise ValidationFailed.field("channel_id", "a notification channel's id")
    rows = await db.read_one(
        store.list_outbox,
        org_id,
        status=status,
        channel_id=channel_id,
        limit=max(1, min(limit, _MAX_LIMIT)),
    )
    return [Outgoing(r) for r in rows]


def _get_delivery(conn: Connection, org_id: str, delivery_id: str) -> Outgoing:
    row = store.get_delivery(conn, org_id, delivery_id) if is_id(delivery_id) else None
    if row is None:
        raise NotFound("No notification delivery of this organization has that id.")
    return Outgoing(row)


async def get_delivery(db: Database, org_id: str, delivery_id: str, *, who: Authority) -> Outgoing:
    who.require("manage_settings")
    return await db.read_one(_get_delivery, org_id, delivery_id)


async def retry_delivery(
    db: Database, org_id: str, delivery_id: str, *, who: Authority, by: Actor
) -> Outgoing:
    """Make a failed delivery due now, with its attempts counted afresh."""
    who.require("manage_settings")

    def _retry(conn: Connection) -> Outgoing:
        found = _get_delivery(conn, org_id, delivery_id)
        if found.row["status"] == "sent":
            raise Conflict("This delivery was sent already; there is nothing to retry.")
        if not store.requeue(conn, org_id, found.row["id"], clock.now_us()):
            raise Conflict("A sender is sending this delivery right now; try again shortly.")
        record(
            conn,
            org_id,
            "notification_delivery.retried",
            by,
            target=found.row["channel_name"],
            details={"id": found.row["id"], "channel_id": found.row["channel_id"]},
        )
        return _get_delivery(conn, org_id, found.row["id"])

    return await db.write(_retry)


async def purge_notifications_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Delete the organization's deliveries queued before `cutoff_us` (its retention window)."""
    return await db.write_in_chunks(store.purge_outbox_before, org_id, cutoff_us)
