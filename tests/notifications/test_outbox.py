"""`enqueue` (what the timeline and the verdict job call) matches the rules and writes the
outbox in the caller's transaction; senders claim rows with a lease, never the same row twice."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.conftest import Tenant
from tests.notifications.support import make_sender
from trailmap import clock, ids
from trailmap.notifications.triggers import Trigger, enqueue
from trailmap.storage import Connection, Database
from trailmap.storage import notifications as store

pytestmark = pytest.mark.anyio


def _channel(org_id: str, name: str, *, enabled: bool = True) -> dict[str, Any]:
    now = clock.now_us()
    return {
        "org_id": org_id,
        "id": ids.new_id(),
        "kind": "slack",
        "name": name,
        "settings": {},
        "secrets_encrypted": None,
        "enabled": enabled,
        "created_by": "tests",
        "created_us": now,
        "updated_us": now,
    }


def _rule(org_id: str, name: str, channels: list[str], **match: Any) -> dict[str, Any]:
    now = clock.now_us()
    return {
        "org_id": org_id,
        "id": ids.new_id(),
        "name": name,
        "match": {"on": ["event"], **match},
        "channel_ids": channels,
        "enabled": True,
        "created_by": "tests",
        "created_us": now,
        "updated_us": now,
    }


async def _setup(db: Database, org_id: str, rules: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One channel per rule (named by the rule), and the rules; returns the channel ids."""

    def _write(conn: Connection) -> list[str]:
        made = []
        for name, match in rules:
            channel = _channel(org_id, f"to-{name}")
            store.insert_channel(conn, channel)
            store.insert_rule(conn, _rule(org_id, name, [channel["id"]], **match))
            made.append(channel["id"])
        return made

    return await db.write(_write)


def _deployment(**fields: Any) -> dict[str, Any]:
    return {
        "id": ids.new_id(),
        "type": "deployment",
        "source": "//github.com/acme/checkout",
        "service": "checkout",
        "subject": "production",
        "severity": None,
        "time_us": clock.now_us(),
        **fields,
    }


async def _queued(db: Database, org_id: str) -> dict[str, str]:
    """Channel name -> the reason of what was queued for it."""
    rows = await db.read_one(store.list_outbox, org_id, status=None, channel_id=None, limit=100)
    return {r["channel_name"]: r["message"]["reason"] for r in rows}


async def test_each_kind_of_trigger_sets_off_only_the_rules_that_ask_for_it(
    db: Database, tenant: Tenant
) -> None:
    org = tenant.org.id
    await _setup(
        db,
        org,
        [
            ("events", {"on": ["event"], "environments": ["production"]}),
            ("violations", {"on": ["violation"]}),
            ("regressions", {"on": ["regressed"]}),
            ("incidents", {"on": ["incident"], "services": ["checkout"]}),
            ("critical", {"on": ["event"], "severities": ["CRITICAL"]}),
        ],
    )
    plain = _deployment()
    flagged = _deployment()
    incident = _deployment(type="incident", severity="CRITICAL")
    staging = _deployment(subject="staging")
    triggers = [
        Trigger("event", plain),
        Trigger("event", flagged, violations=[{"kind": "freeze", "message": "in a freeze"}]),
        Trigger("event", incident),
        Trigger("event", staging),
        Trigger("verdict", plain, verdict="regressed"),
        Trigger("verdict", flagged, verdict="improved"),
    ]
    queued = await db.write(enqueue, org, triggers, clock.now_us())
    rows = await db.read_one(store.list_outbox, org, status=None, channel_id=None, limit=100)
    assert queued == len(rows)
    told = {(r["channel_name"], r["trigger_key"]): r["message"]["reason"] for r in rows}
    assert told == {
        ("to-events", f"event:{plain['id']}"): "event",
        ("to-events", f"event:{flagged['id']}"): "event",
        ("to-events", f"event:{incident['id']}"): "event",
        ("to-violations", f"event:{flagged['id']}"): "violation",
        ("to-regressions", f"verdict:{plain['id']}:regressed"): "regressed",
        ("to-incidents", f"event:{incident['id']}"): "incident",
        ("to-critical", f"event:{incident['id']}"): "event",
    }
    violation = next(r for r in rows if r["channel_name"] == "to-violations")["message"]
    assert violation["violations"] == [{"kind": "freeze", "message": "in a freeze"}]
    assert violation["title"].startswith("Guardrail violation")
    assert violation["severity"] == "warning"


async def test_a_trigger_told_twice_or_by_two_rules_is_queued_once_per_channel(
    db: Database, tenant: Tenant
) -> None:
    org = tenant.org.id
    (channel,) = await _setup(db, org, [("all", {})])

    def _second_rule(conn: Connection) -> None:
        store.insert_rule(conn, _rule(org, "again", [channel], on=["event", "incident"]))

    await db.write(_second_rule)
    stored = _deployment(type="incident")
    assert await db.write(enqueue, org, [Trigger("event", stored)], clock.now_us()) == 1
    assert await db.write(enqueue, org, [Trigger("event", stored)], clock.now_us()) == 0
    assert await _queued(db, org) == {"to-all": "incident"}  # the strongest reason names it


async def test_a_disabled_channel_and_another_organizations_rules_queue_nothing(
    db: Database, tenant: Tenant
) -> None:
    from tests.factories import make_org  # noqa: PLC0415

    org = tenant.org.id
    other = await make_org(db)
    await _setup(db, other.id, [("theirs", {})])

    def _disabled(conn: Connection) -> None:
        channel = _channel(org, "off", enabled=False)
        store.insert_channel(conn, channel)
        store.insert_rule(conn, _rule(org, "to-off", [channel["id"]]))

    await db.write(_disabled)
    assert await db.write(enqueue, org, [Trigger("event", _deployment())], clock.now_us()) == 0
    assert await _queued(db, org) == {}
    assert await _queued(db, other.id) == {}


async def test_what_a_rolled_back_transaction_stored_is_never_queued(
    db: Database, tenant: Tenant
) -> None:
    org = tenant.org.id
    await _setup(db, org, [("all", {})])

    class Refused(Exception):
        pass

    def _fails_after_queueing(conn: Connection) -> None:
        enqueue(conn, org, [Trigger("event", _deployment())], clock.now_us())
        raise Refused

    with pytest.raises(Refused):
        await db.write(_fails_after_queueing)
    assert await _queued(db, org) == {}


async def test_two_senders_claiming_at_once_never_hold_the_same_row(
    db: Database, tenant: Tenant
) -> None:
    org = tenant.org.id
    await _setup(db, org, [("all", {})])
    events = [Trigger("event", _deployment()) for _ in range(60)]
    assert await db.write(enqueue, org, events, clock.now_us()) == 60
    claims: list[list[str]] = []

    async def claim(holder: str) -> None:
        now = clock.now_us()
        rows = await db.write(store.claim_due, holder, now, now + 30_000_000, 25)
        claims.append([r["id"] for r in rows])

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(claim, f"node-{n}")
    assert all(len(rows) <= 25 for rows in claims)  # no claim takes more than asked
    claimed = [row for rows in claims for row in rows]
    assert len(claimed) == len(set(claimed)) == 60
    now = clock.now_us()
    assert await db.write(store.claim_due, "late", now, now + 1, 100) == []  # all leased


async def test_a_lease_that_ran_out_lets_another_sender_send_the_row(
    db: Database, tenant: Tenant
) -> None:
    org = tenant.org.id
    await _setup(db, org, [("all", {})])
    await db.write(enqueue, org, [Trigger("event", _deployment())], clock.now_us())
    now = clock.now_us()
    (first,) = await db.write(store.claim_due, "dead-node", now, now + 1_000, 10)
    assert first["attempts"] == 1
    later = now + 2_000
    (again,) = await db.write(store.claim_due, "live-node", later, later + 1_000_000, 10)
    assert again["id"] == first["id"]
    assert again["attempts"] == 2
    # The dead node's late answer changes nothing: the row is not its any more.
    assert not await db.write(store.mark_sent, [(org, first["id"])], "dead-node", later)
    assert await db.write(store.mark_sent, [(org, first["id"])], "live-node", later) == 1
    assert make_sender(db).node  # a sender names its node in its claims


async def test_the_retention_purge_removes_deliveries_past_the_window_but_none_being_sent(
    db: Database, tenant: Tenant
) -> None:
    from datetime import timedelta  # noqa: PLC0415

    from trailmap.jobs.retention import purge_expired  # noqa: PLC0415

    org = tenant.org.id
    await _setup(db, org, [("all", {})])
    old_us = clock.to_us(clock.now() - timedelta(days=tenant.org.retention_days + 1))
    await db.write(enqueue, org, [Trigger("event", _deployment()) for _ in range(3)], old_us)
    await db.write(enqueue, org, [Trigger("event", _deployment())], clock.now_us())
    now = clock.now_us()
    (held,) = await db.write(store.claim_due, "busy-node", now, now + 60_000_000, 1)
    report = await purge_expired(db)
    assert report.notifications == 2  # the one held by a sender is left to it
    left = await db.read_one(store.list_outbox, org, status=None, channel_id=None, limit=10)
    assert {r["id"] for r in left} >= {held["id"]}
    assert len(left) == 2
