"""A deployment's automatic verdict: reached on its own once its after window has passed,
once, whichever of two racing app nodes gets there; not enough data without points."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from tests.factories import event, make_org, principal_for
from trailmap import clock
from trailmap.metrics import verdicts
from trailmap.metrics.points import record_points
from trailmap.metrics.verdicts import reach_due_verdicts
from trailmap.notifications.triggers import Trigger
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events
from trailmap.timeline.queries import EventQuery, get_event, query_events

pytestmark = pytest.mark.anyio

_OUTBOUND = OutboundPolicy()


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _deployment(db: Database, principal: Any, at: datetime, **extra: Any) -> str:
    result = await ingest_events(
        db,
        principal,
        [event(time=_iso(at), service="checkout", subject="production", **extra)],
        max_event_bytes=10_240,
        now=at + timedelta(seconds=1),
    )
    return str(result.accepted[0]["id"])


async def _error_rate(
    db: Database, principal: Any, deployed: datetime, before: float, after: float
) -> None:
    """Points every minute for two hours on each side of the deployment."""
    rng = random.Random(7)
    points = [
        {
            "name": "error_rate",
            "value": (before if minute < 0 else after) * (1 + rng.uniform(-0.1, 0.1)),
            "time": _iso(deployed + timedelta(minutes=minute)),
            "service": "checkout",
            "subject": "production",
        }
        for minute in range(-120, 120)
    ]
    await record_points(db, principal, points, now=deployed + timedelta(hours=3))


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[Trigger]:
    """What the verdict job hands the notifications seam (a no-op on this branch)."""
    calls: list[Trigger] = []

    def enqueue(_conn: Any, _org_id: str, triggers: list[Trigger], _now_us: int) -> int:
        calls.extend(triggers)
        return len(triggers)

    monkeypatch.setattr(verdicts, "enqueue", enqueue)
    return calls


async def test_a_deployment_that_raised_the_error_rate_is_regressed_once_its_window_passed(
    db: Database, told: list[Trigger]
) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    deployed = clock.now().replace(microsecond=0) - timedelta(hours=5)
    event_id = await _deployment(db, principal, deployed)
    await _error_rate(db, principal, deployed, before=0.01, after=0.08)

    early = await reach_due_verdicts(
        db, node="a", outbound=_OUTBOUND, now=deployed + timedelta(hours=1, minutes=59)
    )
    assert early.reached == 0
    assert "verdict" not in await get_event(db, principal, event_id)

    done = await reach_due_verdicts(
        db, node="a", outbound=_OUTBOUND, now=deployed + timedelta(hours=2, minutes=2)
    )
    assert done.reached == 1
    shown = await get_event(db, principal, event_id)
    assert shown["verdict"] == "regressed"
    assert {"name": "error_rate", "verdict": "increased"}.items() <= {
        **shown["verdict_details"]["metrics"][0]
    }.items()
    page = await query_events(db, principal, EventQuery(from_="-1d", types=("deployment",)))
    assert [e.get("verdict") for e in page.events] == ["regressed"]
    assert [(t.kind, t.verdict, t.event["trailmap_id"]) for t in told] == [
        ("verdict", "regressed", event_id)
    ]

    again = await reach_due_verdicts(db, node="b", outbound=_OUTBOUND)
    assert again.reached == 0
    assert len(told) == 1


async def test_two_racing_job_runners_compute_the_verdict_once(
    db: Database, told: list[Trigger]
) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    deployed = clock.now().replace(microsecond=0) - timedelta(hours=4)
    await _deployment(db, principal, deployed)
    await _error_rate(db, principal, deployed, before=0.01, after=0.08)
    runs: list[verdicts.VerdictRun] = []

    async def run(node: str) -> None:
        runs.append(await reach_due_verdicts(db, node=node, outbound=_OUTBOUND))

    async with anyio.create_task_group() as group:
        for node in ("a", "b", "c"):
            group.start_soon(run, node)
    assert sum(r.reached for r in runs) == 1
    assert len(told) == 1


async def test_a_deployment_with_no_points_gets_not_enough_data(
    db: Database, told: list[Trigger]
) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    deployed = clock.now().replace(microsecond=0) - timedelta(hours=3)
    event_id = await _deployment(db, principal, deployed)
    run = await reach_due_verdicts(db, node="a", outbound=_OUTBOUND)
    assert run.reached == 1
    assert (await get_event(db, principal, event_id))["verdict"] == "not_enough_data"
    assert told == []


async def test_a_steady_error_rate_is_no_significant_change(
    db: Database, told: list[Trigger]
) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    deployed = clock.now().replace(microsecond=0) - timedelta(hours=3)
    event_id = await _deployment(db, principal, deployed)
    await _error_rate(db, principal, deployed, before=0.02, after=0.02)
    await reach_due_verdicts(db, node="a", outbound=_OUTBOUND)
    assert (await get_event(db, principal, event_id))["verdict"] == "no_significant_change"
    assert told == []


async def test_the_verdict_is_shown_in_the_rest_event_answer(
    db: Database, client: Any, told: list[Trigger]
) -> None:
    from tests.factories import make_key  # noqa: PLC0415

    org = await make_org(db)
    principal = principal_for(org)
    key = await make_key(db, org, scope="read-only")
    deployed = clock.now().replace(microsecond=0) - timedelta(hours=3)
    event_id = await _deployment(db, principal, deployed)
    await _error_rate(db, principal, deployed, before=0.01, after=0.08)
    await reach_due_verdicts(db, node="a", outbound=_OUTBOUND)
    auth = {"Authorization": f"Bearer {key}"}
    listed = (await client.get("/api/v1/events?from=-1d", headers=auth)).json()["data"]
    assert listed["events"][0]["verdict"] == "regressed"
    one = (await client.get(f"/api/v1/events/{event_id}", headers=auth)).json()["data"]
    assert one["verdict"] == "regressed"
    assert one["verdict_details"]["window"] == "2h"
