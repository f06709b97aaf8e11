"""One event by the id its asker holds: the producer's CloudEvents id (with its source when
producers share it) or Trailmap's own id; and an event rendered as its producer sent it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.factories import event, make_org, principal_for
from trailmap.accounts import Organization
from trailmap.errors import NotFound, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import events as store
from trailmap.timeline.ingest import ingest_events
from trailmap.timeline.queries import EventQuery, get_event, query_events

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 11, 0, 15, tzinfo=UTC)
CHECKOUT = "//github.com/acme/checkout"
PAYMENTS = "//github.com/acme/payments"


async def store_events(db: Database, org: Organization, *items: dict[str, Any]) -> list[str]:
    """Ingest `items` as of NOW; Trailmap's ids in the order given."""
    result = await ingest_events(
        db, principal_for(org), list(items), max_event_bytes=10 * 1024, now=NOW
    )
    assert result.rejected == []
    return [a["id"] for a in sorted(result.accepted, key=lambda a: a["index"])]


def at(moment: datetime) -> str:
    return moment.isoformat()


async def test_an_event_is_rendered_with_the_id_its_producer_sent_and_trailmaps_beside_it(
    db: Database,
) -> None:
    org = await make_org(db)
    (stored,) = await store_events(db, org, event(id="d-41", source=CHECKOUT, time=at(NOW)))
    page = await query_events(db, principal_for(org), EventQuery(from_="-1h"), now=NOW)
    (listed,) = page.events
    assert listed["specversion"] == "1.0"
    assert (listed["id"], listed["source"]) == ("d-41", CHECKOUT)
    assert listed["trailmap_id"] == stored
    assert listed["event_id"] == "d-41"  # kept for the clients that read it there


async def test_an_event_is_found_by_the_id_its_producer_sent(db: Database) -> None:
    org = await make_org(db)
    await store_events(db, org, event(id="d-41", source=CHECKOUT, time=at(NOW)))
    found = await get_event(db, principal_for(org), "d-41", now=NOW)
    assert (found["id"], found["source"]) == ("d-41", CHECKOUT)


async def test_an_event_is_still_found_by_trailmaps_own_id(db: Database) -> None:
    org = await make_org(db)
    (stored,) = await store_events(db, org, event(id="d-41", source=CHECKOUT, time=at(NOW)))
    found = await get_event(db, principal_for(org), stored, now=NOW)
    assert (found["id"], found["trailmap_id"]) == ("d-41", stored)
    with_source = await get_event(db, principal_for(org), stored, source=CHECKOUT, now=NOW)
    assert with_source["trailmap_id"] == stored


async def test_an_id_sent_from_two_sources_is_refused_naming_both_and_the_source_argument(
    db: Database,
) -> None:
    org = await make_org(db)
    await store_events(
        db,
        org,
        event(id="release-7", source=PAYMENTS, type="config-change", time=at(NOW)),
        event(id="release-7", source=CHECKOUT, time=at(NOW)),
    )
    with pytest.raises(ValidationFailed) as raised:
        await get_event(db, principal_for(org), "release-7", now=NOW)
    message = raised.value.message
    assert "'release-7' names 2 events" in message
    assert f"{CHECKOUT} (deployment)" in message
    assert f"{PAYMENTS} (config-change)" in message
    assert "source" in message
    (detail,) = raised.value.details
    assert detail.field == "source"
    assert CHECKOUT in detail.message
    assert PAYMENTS in detail.message


async def test_the_source_picks_one_of_the_events_that_share_an_id(db: Database) -> None:
    org = await make_org(db)
    checkout_id, payments_id = await store_events(
        db,
        org,
        event(id="release-7", source=CHECKOUT, time=at(NOW)),
        event(id="release-7", source=PAYMENTS, time=at(NOW)),
    )
    principal = principal_for(org)
    found = await get_event(db, principal, "release-7", source=PAYMENTS, now=NOW)
    assert (found["source"], found["trailmap_id"]) == (PAYMENTS, payments_id)
    found = await get_event(db, principal, "release-7", source=CHECKOUT, now=NOW)
    assert (found["source"], found["trailmap_id"]) == (CHECKOUT, checkout_id)


async def test_a_source_that_never_sent_the_id_is_not_found_and_named(db: Database) -> None:
    org = await make_org(db)
    (stored,) = await store_events(db, org, event(id="d-41", source=CHECKOUT, time=at(NOW)))
    for asked in ("d-41", stored):
        with pytest.raises(NotFound) as raised:
            await get_event(db, principal_for(org), asked, source=PAYMENTS, now=NOW)
        assert raised.value.message == (
            f"No event with the id {asked!r} from the source {PAYMENTS!r} in this organization."
        )


async def test_an_id_with_slashes_and_one_longer_than_a_uuid_are_found(db: Database) -> None:
    org = await make_org(db)
    long_id = "pipeline-" + "x" * 150
    await store_events(
        db,
        org,
        event(id="production/checkout/1.5.0", source="otel://checkout", time=at(NOW)),
        event(id=long_id, source=CHECKOUT, time=at(NOW)),
    )
    principal = principal_for(org)
    found = await get_event(db, principal, "production/checkout/1.5.0", now=NOW)
    assert found["source"] == "otel://checkout"
    assert (await get_event(db, principal, long_id, now=NOW))["id"] == long_id


async def test_a_producer_id_outside_the_retention_window_is_not_found(db: Database) -> None:
    org = await make_org(db, plan="free")
    principal = principal_for(org)
    old = NOW - timedelta(days=principal.retention_days + 1)
    result = await ingest_events(
        db, principal, [event(id="old-1", time=at(old))], max_event_bytes=10 * 1024, now=old
    )
    assert len(result.accepted) == 1
    with pytest.raises(NotFound):
        await get_event(db, principal, "old-1", now=NOW)


async def test_another_organizations_producer_id_is_not_found(db: Database) -> None:
    mine, theirs = await make_org(db), await make_org(db)
    await store_events(db, theirs, event(id="theirs-1", time=at(NOW)))
    with pytest.raises(NotFound):
        await get_event(db, principal_for(mine), "theirs-1", now=NOW)


async def test_a_bad_source_is_refused_naming_the_source(db: Database) -> None:
    org = await make_org(db)
    for source in ("", "s" * 501, "a\x00b"):
        with pytest.raises(ValidationFailed) as raised:
            await get_event(db, principal_for(org), "d-41", source=source, now=NOW)
        assert [d.field for d in raised.value.details] == ["source"]


def _plan(conn: Connection, org_id: str) -> str:
    """The plan of the lookup by producer id alone, as the database would run it."""
    stmt = store.producer_id_statement(org_id, "d-41")
    sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        return "\n".join(str(row[-1]) for row in rows)
    # A small table is cheaper to scan; ask what PostgreSQL would do with a large one.
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = conn.exec_driver_sql(f"EXPLAIN {sql}").fetchall()
    return "\n".join(str(row[0]) for row in rows)


async def test_the_lookup_by_producer_id_alone_seeks_its_own_index(db: Database) -> None:
    org = await make_org(db)
    await store_events(
        db, org, *(event(id=f"d-{n}", source=f"//ci/{n}", time=at(NOW)) for n in range(50))
    )
    plan = await db.read(_plan, org.id)
    # Not the unique index led by source, which would be walked across the organization.
    assert "ix_events_org_id_event_id" in plan, plan
