"""DORA's figures checked against counts computed independently (plain loops over the
generated history, below) on random seeded histories; the week buckets on their edges."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.factories import make_org, principal_for
from trailmap import clock
from trailmap.storage import Database
from trailmap.storage import verdicts as verdict_store
from trailmap.timeline.dora import get_dora_metrics, level_of, week_start
from trailmap.timeline.ingest import ingest_events

pytestmark = pytest.mark.anyio

_DAY = timedelta(days=1)
_SERVICES = ("cart", "search", "billing")
_ENVS = ("production", "staging")


@dataclass
class _E:
    key: str
    type: str
    at: datetime
    service: str
    env: str | None
    sha: str | None = None
    version: str | None = None
    status: str | None = None
    regressed: bool = False
    id: str = ""


def _history(seed: int, start: datetime, days: int) -> list[_E]:
    rng = random.Random(seed)
    out: list[_E] = []
    used: set[int] = set()

    def moment() -> datetime:
        while True:  # distinct seconds: no two events at the same time
            s = rng.randrange(days * 86_400)
            if s not in used:
                used.add(s)
                return start + timedelta(seconds=s)

    n = 0
    for service in _SERVICES:
        merges = sorted(
            (_E(f"m{(n := n + 1)}", "change-merged", moment(), service, None) for _ in range(25)),
            key=lambda e: e.at,
        )
        for m in merges:
            m.sha = f"{rng.getrandbits(160):040x}"
            m.version = m.sha[:7]
        out += merges
        for env in _ENVS:
            for _ in range(rng.randrange(10, 25)):
                at = moment()
                d = _E(f"d{(n := n + 1)}", "deployment", at, service, env)
                before = [m for m in merges if m.at <= at]
                how = rng.random()
                if before and how < 0.4:
                    m = rng.choice(before)
                    d.sha, d.version = m.sha, m.version
                elif before and how < 0.6:
                    d.version = rng.choice(before).version  # a short sha alone
                else:
                    d.version = f"v1.{rng.randrange(100)}"  # names no commit
                d.status = "failed" if rng.random() < 0.1 else "succeeded"
                d.regressed = rng.random() < 0.1
                out.append(d)
            for _ in range(rng.randrange(2, 6)):
                out.append(_E(f"r{(n := n + 1)}", "rollback", moment(), service, env))
        for _ in range(rng.randrange(3, 7)):
            where = rng.choice((*_ENVS, None))
            at = moment()
            out.append(_E(f"i{(n := n + 1)}", "incident", at, service, where))
            if rng.random() < 0.8:
                later = at + timedelta(seconds=rng.randrange(60, 3 * 86_400))
                if later < start + timedelta(days=days):
                    used.add(int((later - start).total_seconds()))
                    out.append(_E(f"x{(n := n + 1)}", "incident-resolved", later, service, where))
        for _ in range(rng.randrange(0, 3)):  # a rollback of the service anywhere
            out.append(_E(f"r{(n := n + 1)}", "rollback", moment(), service, None))
    return out


def _cloud(e: _E) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": e.key,
        "type": e.type,
        "source": f"//github.com/acme/{e.service}",
        "service": e.service,
        "time": e.at.isoformat(),
        "data": {},
    }
    if e.env:
        body["subject"] = e.env
    if e.version:
        body["version"] = e.version
    if e.sha:
        body["data"]["sha"] = e.sha
    if e.status:
        body["data"]["status"] = e.status
    return body


async def _store(db: Database, principal: Any, history: list[_E]) -> None:
    result = await ingest_events(
        db, principal, [_cloud(e) for e in history], max_event_bytes=10_240
    )
    assert not result.rejected
    ids = {a["event_id"]: a["id"] for a in result.accepted}
    for e in history:
        e.id = ids[e.key]
        if e.regressed:
            now_us = clock.now_us()
            await db.write(verdict_store.claim_verdict, principal.org_id, e.id, "t", now_us, now_us)
            await db.write(
                verdict_store.store_verdict, principal.org_id, e.id, "t", "regressed", {}, now_us
            )


def _expected(  # noqa: PLR0912 - one plain loop per figure, on purpose
    history: list[_E], lo: datetime, hi: datetime, env: str | None
) -> dict[str, Any]:
    """The figures, by the rules of docs/dora.md, with plain loops."""
    ops = [
        e for e in history if e.type != "change-merged" and (env is None or e.env in (env, None))
    ]
    deploys = [e for e in ops if e.type == "deployment"]
    in_range = [d for d in deploys if lo <= d.at < hi]
    ok = [d for d in in_range if d.status != "failed"]
    failed = 0
    for d in in_range:
        nxt = [x.at for x in deploys if x.service == d.service and x.env == d.env and x.at > d.at]
        end = min([d.at + _DAY, *nxt])
        trouble = any(
            t.type in ("rollback", "incident")
            and t.service == d.service
            and t.env in (d.env, None)
            and d.at < t.at <= end
            for t in ops
        )
        failed += d.status == "failed" or d.regressed or trouble
    leads: list[float] = []
    for service in _SERVICES:
        merges = sorted(
            (m for m in history if m.type == "change-merged" and m.service == service),
            key=lambda m: m.at,
        )
        for lane_env in _ENVS if env is None else (env,):
            shipped: set[str] = set()
            lane = sorted(
                (d for d in deploys if d.service == service and d.env == lane_env),
                key=lambda d: d.at,
            )
            for d in lane:
                if d.status == "failed":
                    continue
                named = [
                    m
                    for m in merges
                    if (d.sha and m.sha == d.sha)
                    or (not d.sha and d.version and m.sha and m.sha.startswith(d.version))
                ]
                limit = named[-1].at if named else d.at
                if named and limit > d.at:
                    continue
                for m in merges:
                    if m.at <= limit and m.key not in shipped:
                        shipped.add(m.key)
                        if lo <= d.at < hi:
                            leads.append((d.at - m.at).total_seconds())
    restores: list[float] = []
    unresolved = 0
    for service in _SERVICES:
        for where in (*_ENVS, None):
            if env is not None and where not in (env, None):
                continue
            rows = sorted(
                (e for e in ops if e.service == service and e.env == where),
                key=lambda e: e.at,
            )
            waiting: list[_E] = []
            for e in rows:
                if e.type == "incident" and lo <= e.at < hi:
                    waiting.append(e)
                elif e.type == "incident-resolved" and waiting:
                    restores.append((e.at - waiting.pop(0).at).total_seconds())
            unresolved += len(waiting)
    return {
        "deployments": len(ok),
        "attempted": len(in_range),
        "failed": failed,
        "lead": statistics.median(leads) if leads else None,
        "shipped": len(leads),
        "restore": statistics.median(restores) if restores else None,
        "restored": len(restores),
        "unresolved": unresolved,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("environment", [None, "production"])
async def test_dora_figures_match_an_independent_count_of_a_generated_history(
    db: Database, seed: int, environment: str | None
) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    start = (clock.now() - timedelta(days=80)).replace(microsecond=0)
    history = _history(seed, start, 70)
    await _store(db, principal, history)
    lo, hi = start + timedelta(days=20), start + timedelta(days=60)
    answer = await get_dora_metrics(
        db,
        principal,
        from_=lo.isoformat(),
        to=hi.isoformat(),
        environment=environment,
        evidence_limit=1000,
    )
    want = _expected(history, lo, hi, environment)
    df, lt = answer["deployment_frequency"], answer["lead_time"]
    cfr, ttr = answer["change_failure_rate"], answer["time_to_restore"]
    assert df["deployments"] == want["deployments"]
    assert cfr["deployments"] == want["attempted"]
    assert cfr["failed"] == want["failed"]
    assert lt["changes"] == want["shipped"]
    assert lt["median_seconds"] == want["lead"]
    assert ttr["restored"] == want["restored"]
    assert ttr["median_seconds"] == want["restore"]
    assert ttr["unresolved"] == want["unresolved"]
    assert sum(w["deployments"] for w in answer["weeks"]) == want["deployments"]
    assert len(df["events"]["items"]) == want["deployments"]
    assert df["level"] == level_of("deployment_frequency", want["deployments"] / 40)


async def test_evidence_is_capped_with_its_total(db: Database) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    start = (clock.now() - timedelta(days=80)).replace(microsecond=0)
    await _store(db, principal, _history(5, start, 70))
    answer = await get_dora_metrics(db, principal, from_="-90d", evidence_limit=3)
    listed = answer["deployment_frequency"]["events"]
    assert len(listed["items"]) == 3
    assert listed["total"] > 3
    assert listed["truncated"] is True


async def test_weeks_start_on_monday_midnight_in_the_asked_zone(db: Database) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    paris = ZoneInfo("Europe/Paris")
    monday = week_start(clock.to_us(clock.now() - timedelta(days=30)), paris) + timedelta(days=7)
    sunday_late = monday - timedelta(seconds=1)
    history = [
        _E("a", "deployment", sunday_late.astimezone(UTC), "cart", "production", status="ok"),
        _E("b", "deployment", monday.astimezone(UTC), "cart", "production", status="ok"),
        _E(
            "c",
            "deployment",
            (monday + timedelta(days=7) - timedelta(seconds=1)),
            "cart",
            "production",
            status="ok",
        ),
    ]
    await _store(db, principal, history)
    answer = await get_dora_metrics(
        db,
        principal,
        from_=(monday - timedelta(days=7)).isoformat(),
        to=(monday + timedelta(days=14)).isoformat(),
        timezone="Europe/Paris",
    )
    counts = {w["week"]: w["deployments"] for w in answer["weeks"]}
    first = (monday - timedelta(days=7)).date().isoformat()
    assert counts == {
        first: 1,
        monday.date().isoformat(): 2,
        (monday + timedelta(days=7)).date().isoformat(): 0,
    }
    assert not any(w["partial"] for w in answer["weeks"])


def test_weeks_across_a_daylight_saving_change_are_calendar_weeks() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 2026-10-25: clocks go back in Paris; the week starts on Monday 2026-10-19, 00:00 CEST.
    after_change = datetime(2026, 10, 25, 23, 30, tzinfo=paris)
    assert week_start(clock.to_us(after_change), paris) == datetime(2026, 10, 19, tzinfo=paris)
    monday = datetime(2026, 10, 26, 0, 0, tzinfo=paris)
    assert week_start(clock.to_us(monday), paris) == monday


def test_levels_follow_the_named_bands() -> None:
    assert level_of("deployment_frequency", 3) == "elite"
    assert level_of("deployment_frequency", 1 / 7) == "high"
    assert level_of("deployment_frequency", 1 / 30) == "medium"
    assert level_of("deployment_frequency", 1 / 31) == "low"
    assert level_of("lead_time", 3600) == "elite"
    assert level_of("lead_time", 86_400) == "high"
    assert level_of("change_failure_rate", 0.05) == "elite"
    assert level_of("change_failure_rate", 0.41) == "low"
    assert level_of("time_to_restore", 59 * 60) == "elite"
    assert level_of("time_to_restore", None) is None


async def test_the_rest_answer_is_read_only_and_refuses_a_bad_range(
    client: Any, tenant: Any
) -> None:
    answer = await client.get(
        "/api/v1/dora?from=-30d&environment=production", headers=tenant.auth(tenant.reader)
    )
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert data["edition"].startswith("2023 Accelerate State of DevOps")
    assert data["deployment_frequency"]["deployments"] == 0
    bad = await client.get("/api/v1/dora?from=tomorrowish", headers=tenant.auth(tenant.reader))
    assert bad.status_code == 400
    assert bad.json()["success"] is False
    inverted = await client.get("/api/v1/dora?from=now&to=-1d", headers=tenant.auth())
    assert inverted.status_code == 400
    assert (await client.get("/api/v1/dora")).status_code == 401
