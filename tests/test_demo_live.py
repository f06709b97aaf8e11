"""The demo shop keeps running: time moves (a clock the test moves), ticks take the traffic and
the changes since the last one through the real ingestion paths, and the seed questions about
recent changes keep their answers. `trailmap demo --reset` starts the demo over and leaves
every other organization as it was.

Most tests run the shop on a small organization at a low rate, from a clock started by hand,
without the week a full load makes; the reset test loads a shortened week.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.factories import make_key, make_org
from trailmap import clock
from trailmap.accounts import Organization, authenticate, get_org
from trailmap.app import create_app
from trailmap.cli.main import cli
from trailmap.demo import live, load, traces
from trailmap.demo.live import advance_demo, live_changes, live_releases, start_clock
from trailmap.demo.traces import SERVICES, shop_traces
from trailmap.graph.learn import pairing
from trailmap.graph.learn.pairing import sweep_pending
from trailmap.settings import Settings
from trailmap.storage import Database, instance
from trailmap.storage import graph as graph_store
from trailmap.timeline.ingest import ingest_events
from trailmap.timeline.queries import EventQuery, query_events

pytestmark = pytest.mark.anyio

# A Wednesday morning; the clock is moved from there by the tests alone.
START = datetime(2026, 3, 4, 9, 7, tzinfo=UTC)
_MCP_BASE = "http://127.0.0.1:8000"


class Clock:
    """`trailmap.clock.now` and `now_us`, stopped at a moment and moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
        self.at = at
        monkeypatch.setattr(clock, "now", lambda: self.at)
        monkeypatch.setattr(clock, "now_us", lambda: clock.to_us(self.at))

    def advance(self, delta: timedelta) -> datetime:
        self.at += delta
        return self.at


def _principal(org: Organization) -> Any:
    return live.principal_of(org)


async def _recent(db: Database, org: Organization, since: str) -> list[dict[str, Any]]:
    page = await query_events(db, _principal(org), EventQuery(from_=since, limit=100))
    return page.events


def _sources(event: dict[str, Any]) -> set[str]:
    return {event["source"], *event.get("also_reported_by", ())}


# -- the schedule ---------------------------------------------------------------------------


def test_any_two_hours_of_the_live_shop_hold_a_deployment() -> None:
    releases = live_releases(START, START + timedelta(days=3))
    # From the moment the demo is loaded, and the hours before it the load includes.
    times = [START - live.LEAD, *(r.at for r in releases), START + timedelta(days=3)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) < timedelta(hours=2)
    assert 3 * 15 <= len(releases) <= 3 * 16 + 2


def test_every_utc_day_has_a_deployment_from_midnight() -> None:
    releases = live_releases(START, START + timedelta(days=4))
    midnight = datetime(2026, 3, 5, tzinfo=UTC)
    for day in range(3):
        first = min(r.at for r in releases if r.at >= midnight + timedelta(days=day))
        assert first == midnight + timedelta(days=day)


def test_each_live_release_raises_its_services_version_above_the_loaded_week() -> None:
    releases = live_releases(START, START + timedelta(days=2))
    loaded = {r.service: r for r in traces.DEFAULT_RELEASES(START)}
    by_service: dict[str, list[tuple[int, ...]]] = {}
    for release in releases:
        assert release.at > START - live.LEAD
        by_service.setdefault(release.service, []).append(
            tuple(int(part) for part in release.version.split("."))
        )
    assert set(by_service) == set(SERVICES)
    for service, versions in by_service.items():
        latest_loaded = max(
            tuple(int(p) for p in r.version.split("."))
            for r in traces.DEFAULT_RELEASES(START)
            if r.service == service
        )
        assert loaded[service]
        assert versions == sorted(versions)
        assert len(set(versions)) == len(versions)
        assert versions[0] > latest_loaded


def test_the_releases_before_the_load_are_sound_and_leave_the_weeks_two_stories_last() -> None:
    # Loaded at any time of day: the hours before it hold releases, none of checkout or
    # payments (whose last releases the seed questions ask about), none of them bad.
    for step in range(24 * 4):
        loaded = START + timedelta(minutes=37 * step)
        before = [r for r in live_releases(loaded, loaded) if r.at <= loaded]
        assert before
        assert max(r.at for r in before) > loaded - timedelta(hours=2)
        assert not {"checkout", "payments"} & {r.service for r in before}
        assert all(r.error_rate < 0.01 for r in before)


def test_the_schedule_is_fixed_by_the_seed_and_the_clock() -> None:
    end = START + timedelta(hours=12)
    assert live_releases(START, end, seed=3) == live_releases(START, end, seed=3)
    assert live_releases(START, end, seed=3) != live_releases(START, end, seed=4)
    # Asked later, the same slots give the same releases.
    shorter = live_releases(START, end)
    assert live_releases(START, end + timedelta(hours=5))[: len(shorter)] == shorter
    assert len(live_releases(START, end + timedelta(hours=5))) > len(shorter)
    changes = live_changes(START, START, end)
    assert changes == live_changes(START, START, end)
    kinds = Counter(str(c["type"]) for c in changes)
    assert kinds["deployment"] == len([r for r in shorter if r.at >= START]) >= 7
    assert kinds["config-change"] + kinds["feature-flag"] >= 2


# -- ticks ------------------------------------------------------------------------------------


async def test_three_hours_of_ticks_leave_deployments_in_the_last_two_hours_seen_in_traces(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    org = await make_org(db, slug="demo")
    await start_clock(db, org.id, START)
    assert await _recent(db, org, "-2h") == []
    added = []
    for _ in range(18):  # a tick every 10 minutes
        now = fake.advance(timedelta(minutes=10))
        advance = await advance_demo(db, org, now=now, traces_per_minute=1.0)
        assert advance is not None
        added.append(advance)
    assert [a.start for a in added[1:]] == [a.end for a in added[:-1]]
    assert sum(a.spans for a in added) > 1000
    fake.advance(timedelta(minutes=1))
    await sweep_pending(db, max_pending=10**6)

    recent = await _recent(db, org, "-2h")
    assert recent, "nothing changed in the last two hours"
    ci = [e for e in recent if e["type"] == "deployment" and e["source"].startswith("//github")]
    assert ci, recent
    # The version CI reported is the one the service's traces carry from then on: the graph
    # detected the same deployment from them.
    everything = await _recent(db, org, "-3h")
    for deployment in ci:
        detected = [
            e
            for e in everything
            if e["type"] == "deployment"
            and e.get("version") == deployment["version"]
            and f"otel://{deployment['service']}" in _sources(e)
        ]
        assert detected, (deployment, everything)
    today = await _recent(db, org, "today")
    assert any(e["type"] == "deployment" for e in today)


async def test_a_tick_finds_where_the_last_one_stopped_and_two_nodes_never_run_the_same_minutes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    org = await make_org(db, slug="demo")
    await start_clock(db, org.id, START)
    now = fake.advance(timedelta(minutes=5))
    first = await advance_demo(db, org, now=now, traces_per_minute=2.0)
    assert first is not None
    assert (first.start, first.end) == (START, now)
    # Another node at the same moment: its time is taken.
    assert await advance_demo(db, org, now=now, traces_per_minute=2.0) is None
    # A restart resumes from the database, not from memory.
    later = fake.advance(timedelta(minutes=3))
    second = await advance_demo(db, org, now=later, traces_per_minute=2.0)
    assert second is not None
    assert (second.start, second.end) == (now, later)


async def test_a_shop_stopped_for_a_day_resumes_six_hours_before_now(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    org = await make_org(db, slug="demo")
    await start_clock(db, org.id, START)
    now = fake.advance(timedelta(days=1))
    advance = await advance_demo(db, org, now=now, traces_per_minute=0.2)
    assert advance is not None
    assert advance.start == now - traces.RECENT
    recent = await _recent(db, org, "-6h")
    assert recent
    assert await _recent(db, org, "-12h") == recent


async def test_the_server_started_for_the_demo_keeps_its_shop_running(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    org = await make_org(db, slug="demo")
    await start_clock(db, org.id, START)
    monkeypatch.setattr(live, "BUSY_TRACES_PER_MINUTE", 1.0)
    settings = Settings(
        database_url=database_url, retention_purge_interval_seconds=0, demo_tick_seconds=0.05
    )
    key = await make_key(db, org, scope="read-only")
    async with _mcp(settings, db, key, live_demo="demo") as mcp:
        fake.advance(timedelta(hours=3))
        # A tick claims its time first, then ingests it: asked until all of it is claimed
        # and its changes are in.
        answer: dict[str, Any] = {}
        for _ in range(400):
            state = await db.read(instance.get_setting, f"demo.live:{org.id}")
            answer = await _tool(mcp, "query_events", {"from": "-2h", "limit": 100})
            deployed = any(e["type"] == "deployment" for e in answer["events"])
            if deployed and state == f"{clock.to_us(START)} {clock.to_us(fake.at)}":
                break
            await _sleep(0.05)
        else:
            pytest.fail(f"the demo did not tick: {answer}")


# -- reset ------------------------------------------------------------------------------------


async def test_a_reset_starts_the_demo_over_and_leaves_other_organizations_alone(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    # A shorter week and busy hour, so the load takes a second, not a quarter of a minute.
    monkeypatch.setattr(load, "_WEEK", timedelta(hours=12))
    monkeypatch.setattr(traces, "RECENT", timedelta(minutes=30))
    other = await make_org(db, slug="acme")
    other_principal = _principal(other)
    await live.ingest_merged(
        db,
        other_principal,
        shop_traces(START - timedelta(hours=1), START, releases=traces.DEFAULT_RELEASES(START)),
        now=START,
    )
    sent = {"specversion": "1.0", "id": "acme-1", "type": "deployment", "source": "//ci/acme"}
    sent |= {"time": START.isoformat(), "service": "web", "version": "1.0.0"}
    await ingest_events(db, other_principal, [sent], max_event_bytes=10 * 1024, now=START)
    # Its halves settled, as its server's sweeps settle them half a minute later.
    await sweep_pending(db, now_us=clock.to_us(START + timedelta(hours=1)), max_pending=10**6)
    before = await _holdings(db, other)
    assert before["nodes"]
    assert before["events"] == 1

    first = await load.load_demo(db, "demo")
    assert "spans of traces" in first
    demo = await get_org(db, "demo")
    mark = {"specversion": "1.0", "id": "mine", "type": "incident", "source": "//me"}
    mark["time"] = START.isoformat()
    await ingest_events(db, _principal(demo), [mark], max_event_bytes=10 * 1024, now=START)
    loaded = await _holdings(db, demo)
    assert "mine" in loaded["event_ids"]
    assert loaded["events"] > 0

    fake.advance(timedelta(hours=2))
    again = await load.reset_demo(db, "demo")
    assert "spans of traces" in again
    assert await get_org(db, "demo") == demo  # the organization itself stays
    after = await _holdings(db, demo)
    assert "mine" not in after["event_ids"]
    assert after["nodes"] == loaded["nodes"]
    week = {"deploy-checkout-3.10.0", "deploy-payments-2.7.0", "demo-change-0", "demo-change-39"}
    assert week <= loaded["event_ids"]
    assert week <= after["event_ids"]
    assert await _holdings(db, other) == before
    # The shop runs on from the reset, not from the first load.
    now = fake.advance(timedelta(minutes=2))
    advance = await advance_demo(db, demo, now=now, traces_per_minute=1.0)
    assert advance is not None
    assert advance.start == now - timedelta(minutes=2)


async def test_running_the_demo_load_again_adds_the_time_since(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    monkeypatch.setattr(load, "_WEEK", timedelta(hours=12))
    monkeypatch.setattr(traces, "RECENT", timedelta(minutes=30))
    await load.load_demo(db, "demo")
    demo = await get_org(db, "demo")
    fake.advance(timedelta(minutes=20))
    report = await load.load_demo(db, "demo")
    assert "ran the 20 minutes up to now" in report
    assert "already up to date" in await load.load_demo(db, "demo")
    minute = await db.read(graph_store.newest_minute, demo.id)
    assert minute is not None
    assert minute >= clock.to_us(fake.at) - 2 * 60_000_000


async def _holdings(db: Database, org: Organization) -> dict[str, Any]:
    # Every page: the demo holds a quarter of history before its week (demo/history.py).
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await query_events(
            db,
            _principal(org),
            EventQuery(from_="2026-01-01T00:00:00Z", limit=100, cursor=cursor),
        )
        events.extend(page.events)
        cursor = page.next_cursor
        if cursor is None:
            break
    nodes = sorted(row.id for row in await db.read(graph_store.node_rows, org.id))
    minutes = await db.read(graph_store.newest_minute, org.id)
    return {
        "events": len(events),
        "event_ids": {e["event_id"] for e in events},
        "nodes": nodes,
        "newest_minute": minutes,
    }


# -- the in-process server ------------------------------------------------------------------


@asynccontextmanager
async def _mcp(
    settings: Settings, db: Database, key: str, *, live_demo: str
) -> AsyncIterator[Client]:
    app = create_app(settings, database=db, live_demo=live_demo)
    async with app.router.lifespan_context(app):
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url=_MCP_BASE,
            headers={"Authorization": f"Bearer {key}"},
        )
        async with (
            http,
            Client(streamable_http_client(f"{_MCP_BASE}/mcp", http_client=http)) as mcp,
        ):
            yield mcp


async def _tool(mcp: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await mcp.call_tool(name, args)
    assert not result.is_error, result.content
    answer: dict[str, Any] | None = result.structured_content
    assert answer is not None
    return answer


async def _sleep(seconds: float) -> None:
    import anyio  # noqa: PLC0415

    await anyio.sleep(seconds)


async def test_a_tick_that_fails_gives_its_time_back_to_the_next(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    org = await make_org(db, slug="demo")
    await start_clock(db, org.id, START)
    now = fake.advance(timedelta(minutes=30))

    async def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr("trailmap.demo.live.ingest_traces", broken)
        with pytest.raises(RuntimeError):
            await advance_demo(db, org, now=now, traces_per_minute=1.0)
    retried = await advance_demo(db, org, now=now, traces_per_minute=1.0)
    assert retried is not None
    assert (retried.start, retried.end) == (START, now)
    assert retried.spans > 0


async def test_a_tick_that_fails_half_way_keeps_what_it_ingested_and_leaves_a_gap(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Clock(monkeypatch, START)
    org = await make_org(db, slug="demo")
    await start_clock(db, org.id, START)
    now = fake.advance(timedelta(minutes=25))
    real = pairing.ingest_traces
    calls = 0

    async def once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("the database went away")
        return await real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("trailmap.demo.live.ingest_traces", once)
        with pytest.raises(RuntimeError):
            await advance_demo(db, org, now=now, traces_per_minute=20.0)
    resumed = await advance_demo(db, org, now=now, traces_per_minute=1.0)
    assert resumed is not None
    # The first ten minutes stay claimed (some of their traffic is in); the rest is run.
    assert (resumed.start, resumed.end) == (START + timedelta(minutes=10), now)


def test_the_demo_command_loads_catches_up_and_resets_keeping_the_organizations_keys(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "_WEEK", timedelta(hours=12))
    monkeypatch.setattr(traces, "RECENT", timedelta(minutes=30))
    runner = CliRunner()

    def demo(*args: str) -> str:
        result = runner.invoke(cli, ["--database", database_url, "demo", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "spans of traces" in demo()
    made = runner.invoke(
        cli,
        [
            "--database",
            database_url,
            "key",
            "create",
            "--org",
            "demo",
            "--name",
            "a",
            "--scope",
            "read-only",
        ],
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert "its shop ran the" in demo()
    assert "spans of traces" in demo("--reset")

    async def still_works() -> str:
        handle = Database(database_url)
        try:
            return (await authenticate(handle, token)).org_slug
        finally:
            handle.close()

    assert asyncio.run(still_works()) == "demo"
