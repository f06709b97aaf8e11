"""DORA's four key metrics of an organization (a service, an environment) over a range, by
week, each with the events it was computed from and the performance level it falls in
(docs/dora.md: the method, and the bands of the report edition named in every answer)."""

from __future__ import annotations

import statistics
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.errors import ValidationFailed
from trailmap.storage import Database
from trailmap.storage.dora import DoraRow, dora_rows
from trailmap.timeline.queries import resolve_range
from trailmap.timeline.times import TimeExpressionError, resolve_timezone

__all__ = [
    "EDITION",
    "FAILURE_WINDOW_US",
    "MERGE_LOOKBACK_US",
    "DoraHistory",
    "compute_dora",
    "get_dora_metrics",
    "level_of",
    "week_start",
]

EDITION: Final = "2023 Accelerate State of DevOps report (DORA)"
_HOUR_US: Final = 3_600_000_000
_DAY_US: Final = 24 * _HOUR_US
# A deployment failed when a rollback or an incident of its service follows it within this
# time (and before its service's next deployment to that environment).
FAILURE_WINDOW_US: Final = _DAY_US
# Merges this long before the range may be shipped by a deployment in it.
MERGE_LOOKBACK_US: Final = 90 * _DAY_US
# An incident detected in the range may be resolved this long after its end.
RESOLVE_LOOKAHEAD_US: Final = 30 * _DAY_US
MAX_RANGE_DAYS: Final = 400
DEFAULT_EVIDENCE: Final = 50
MAX_EVIDENCE: Final = 1000

# The bands, from the edition above (docs/dora.md says how each is read).
_FREQUENCY_BANDS: Final = (  # deployments per day, at least
    (1.0, "elite"),  # on demand: at least one a day
    (1 / 7, "high"),  # between once a day and once a week
    (1 / 30, "medium"),  # between once a week and once a month
)
_LEAD_TIME_BANDS: Final = (  # seconds, less than
    (86_400, "elite"),  # less than a day
    (7 * 86_400, "high"),  # a day to a week
    (30 * 86_400, "medium"),  # a week to a month
)
_FAILURE_RATE_BANDS: Final = (  # rate, at most
    (0.05, "elite"),
    (0.20, "high"),
    (0.40, "medium"),
)
_RESTORE_BANDS: Final = (  # seconds, less than
    (3_600, "elite"),  # less than an hour
    (86_400, "high"),  # less than a day
    (7 * 86_400, "medium"),  # a day to a week
)


def level_of(metric: str, value: float | None) -> str | None:
    """The performance level of a figure (None when there is no figure)."""
    if value is None:
        return None
    if metric == "deployment_frequency":
        return next((lvl for floor, lvl in _FREQUENCY_BANDS if value >= floor), "low")
    if metric == "change_failure_rate":
        return next((lvl for top, lvl in _FAILURE_RATE_BANDS if value <= top), "low")
    bands = _LEAD_TIME_BANDS if metric == "lead_time" else _RESTORE_BANDS
    return next((lvl for top, lvl in bands if value < top), "low")


def _week_bounds(from_us: int, to_us: int, tz: ZoneInfo) -> list[int]:
    """The start of each calendar week (Monday 00:00 in `tz`) from `from_us`'s to `to_us`."""
    start = week_start(from_us, tz)
    bounds = []
    while clock.to_us(start) < to_us:
        bounds.append(clock.to_us(start))
        start = _next_week(start, tz)
    return bounds or [clock.to_us(week_start(from_us, tz))]


def _next_week(start: datetime, tz: ZoneInfo) -> datetime:
    """A calendar week later, whatever daylight saving did to the clock in between."""
    day = (start + timedelta(days=7, hours=12)).date()
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def week_start(time_us: int, tz: ZoneInfo) -> datetime:
    """Monday 00:00 (in `tz`) of the week holding `time_us`."""
    local = clock.from_us(time_us).astimezone(tz)
    monday = (local - timedelta(days=local.weekday())).date()
    return datetime(monday.year, monday.month, monday.day, tzinfo=tz)


@dataclass(slots=True)
class _Week:
    deployments: list[str] = field(default_factory=list)  # successful, by id
    attempted: int = 0  # successful and failed
    failures: int = 0
    lead_seconds: list[float] = field(default_factory=list)
    restore_seconds: list[float] = field(default_factory=list)


@dataclass(slots=True)
class DoraHistory:
    """What the computation found, before it is rendered: the figures' inputs, by week."""

    deployments: list[str] = field(default_factory=list)  # successful deployments' ids
    attempted: list[str] = field(default_factory=list)  # every deployment, failed or not
    failures: list[dict[str, Any]] = field(default_factory=list)  # {deployment, reasons}
    shipped: list[tuple[str, str, float]] = field(default_factory=list)  # change, deployment, s
    restored: list[dict[str, Any]] = field(default_factory=list)  # {incident, resolved, seconds}
    unresolved: list[str] = field(default_factory=list)
    weeks: dict[datetime, _Week] = field(default_factory=dict)


def _short(version: str | None) -> str | None:
    """A version that may be a commit's abbreviated sha (7 to 40 hex digits)."""
    if version and 7 <= len(version) <= 40 and all(c in "0123456789abcdef" for c in version):
        return version
    return None


def _first_commit_us(commits: Any) -> int | None:
    if isinstance(commits, (str, bytes)):
        commits = orjson.loads(commits)
    if not isinstance(commits, list):
        return None
    times = []
    for commit in commits:
        when = commit.get("time") if isinstance(commit, dict) else None
        if isinstance(when, str):
            try:
                times.append(clock.to_us(datetime.fromisoformat(when)))
            except ValueError:
                continue
    return min(times) if times else None


@dataclass(slots=True)
class _Change:
    id: str
    merged_us: int
    start_us: int  # its first commit's time when a push told it, else the merge's
    sha: str | None
    version: str | None


def compute_dora(
    operations: Sequence[DoraRow],
    changes: Sequence[DoraRow],
    *,
    from_us: int,
    to_us: int,
    tz: ZoneInfo,
    failure_window_us: int = FAILURE_WINDOW_US,
) -> DoraHistory:
    """The figures' inputs from the rows, oldest first (docs/dora.md, "Method")."""
    history = DoraHistory()
    bounds = _week_bounds(from_us, to_us, tz)  # each week's start, in µs
    weeks = [_Week() for _ in bounds]

    def week(time_us: int) -> _Week:
        # A bisection over the weeks' starts: a time zone conversion per event cost more
        # than the rest of the computation.
        return weeks[max(0, bisect_right(bounds, time_us) - 1)]

    # The first commit of each merge, from the push of its commit that listed the commits.
    first_commit: dict[str, int] = {}
    for row in changes:
        if row.type == "push" and row.sha:
            when = _first_commit_us(row.commits)
            if when is not None:
                first_commit[row.sha] = min(when, first_commit.get(row.sha, when))
    merges: dict[str, list[_Change]] = defaultdict(list)  # service: merges, oldest first
    for row in changes:
        if row.type == "change-merged":
            start = min(row.time_us, first_commit.get(row.sha or "", row.time_us))
            merges[row.service or ""].append(
                _Change(row.id, row.time_us, start, row.sha, row.version)
            )

    # Deployments, rollbacks and incidents of each (service, environment), in time order.
    lanes: dict[tuple[str, str | None], list[DoraRow]] = defaultdict(list)
    for row in operations:
        lanes[(row.service or "", row.subject)].append(row)
    # An incident is restored within its own lane: its service and environment (or none).
    for rows in lanes.values():
        _restores(history, week, rows, from_us, to_us)
    # A rollback or an incident with no environment follows the service's deployments to
    # every environment.
    anywhere = {s: rows for (s, env), rows in lanes.items() if env is None}
    for (service, env), own in lanes.items():
        rows = own
        if env is not None and service in anywhere:
            rows = sorted(
                [*own, *(r for r in anywhere[service] if r.type != "deployment")],
                key=lambda r: (r.time_us, r.id),
            )
        deploys = [r for r in rows if r.type == "deployment"]
        _deployments(history, week, deploys, rows, from_us, to_us, failure_window_us)
        _lead_times(history, week, deploys, merges.get(service, []), from_us, to_us)
    history.weeks = {
        clock.from_us(start).astimezone(tz): w for start, w in zip(bounds, weeks, strict=True)
    }
    return history


def _deployments(
    history: DoraHistory,
    week: Any,
    deploys: list[DoraRow],
    rows: list[DoraRow],
    from_us: int,
    to_us: int,
    failure_window_us: int,
) -> None:
    troubles = [r for r in rows if r.type in ("rollback", "incident")]
    trouble_times = [r.time_us for r in troubles]
    attempted, deployed, failures = history.attempted, history.deployments, history.failures
    last = len(deploys) - 1
    for i, deploy in enumerate(deploys):
        at = deploy.time_us
        if not from_us <= at < to_us:
            continue
        bucket = week(at)
        attempted.append(deploy.id)
        bucket.attempted += 1
        failed = deploy.status == "failed"
        if not failed:
            deployed.append(deploy.id)
            bucket.deployments.append(deploy.id)
        end = at + failure_window_us
        if i < last and deploys[i + 1].time_us < end:
            end = deploys[i + 1].time_us
        # The troubles after it and up to `end`: a bisection each way.
        first, stop = bisect_right(trouble_times, at), bisect_right(trouble_times, end)
        if not (failed or deploy.verdict == "regressed" or first < stop):
            continue
        reasons: list[dict[str, str]] = []
        if failed:
            reasons.append({"reason": "failed deployment", "event": deploy.id})
        if deploy.verdict == "regressed":
            reasons.append({"reason": "regressed verdict", "event": deploy.id})
        reasons += [{"reason": r.type, "event": r.id} for r in troubles[first:stop]]
        failures.append({"deployment": deploy.id, "reasons": reasons})
        bucket.failures += 1


def _named(
    deploy: DoraRow,
    merges: list[_Change],
    by_commit: dict[str, int],
    by_prefix: dict[str, list[int]],
    by_version: dict[str, int],
) -> int | None:
    """The latest merge whose commit the deployment names: the same sha; else its version
    as a short sha beginning a merge's; else the same version."""
    if deploy.sha and deploy.sha in by_commit:
        return by_commit[deploy.sha]
    short = _short(deploy.version)
    if short:
        found = [i for i in by_prefix.get(short[:7], ()) if merges[i].sha.startswith(short)]  # type: ignore[union-attr]
        if found:
            return found[-1]
    if deploy.version and deploy.version in by_version:
        return by_version[deploy.version]
    return None


def _lead_times(
    history: DoraHistory,
    week: Any,
    deploys: list[DoraRow],
    merges: list[_Change],
    from_us: int,
    to_us: int,
) -> None:
    """Each merge is shipped, in this environment, by the first successful deployment that
    names its commit or a later merge's (a deployment ships the main branch up to the commit
    it names), or, for a deployment that names no merged commit, by the first one after it."""
    pending = 0  # merges[:pending] are shipped
    shipped = history.shipped
    by_commit: dict[str, int] = {}
    by_prefix: dict[str, list[int]] = defaultdict(list)
    by_version: dict[str, int] = {}
    for i, merge in enumerate(merges):
        if merge.sha:
            by_commit[merge.sha] = i
            by_prefix[merge.sha[:7]].append(i)
        if merge.version:
            by_version[merge.version] = i
    for deploy in deploys:
        if deploy.status == "failed":
            continue
        upto = -1
        named = _named(deploy, merges, by_commit, by_prefix, by_version)
        if named is not None:
            upto = named if merges[named].merged_us <= deploy.time_us else -1
        else:
            # No merged commit named: everything merged before it.
            upto = pending - 1
            while upto + 1 < len(merges) and merges[upto + 1].merged_us <= deploy.time_us:
                upto += 1
        if upto < pending:
            continue  # a redeploy, or a rollback to what was already out
        at = deploy.time_us
        if from_us <= at < to_us:
            leads = week(at).lead_seconds
            for change in merges[pending : upto + 1]:
                seconds = (at - change.start_us) / 1e6
                shipped.append((change.id, deploy.id, seconds))
                leads.append(seconds)
        pending = upto + 1


def _restores(
    history: DoraHistory, week: Any, rows: list[DoraRow], from_us: int, to_us: int
) -> None:
    """Each incident detected in the range, restored by the first later resolution of its
    service (in its environment) not already given to an earlier incident."""
    open_incidents: list[DoraRow] = []
    for row in rows:
        if row.type == "incident":
            if from_us <= row.time_us < to_us:
                open_incidents.append(row)
        elif row.type == "incident-resolved" and open_incidents:
            incident = open_incidents.pop(0)
            seconds = (row.time_us - incident.time_us) / 1e6
            history.restored.append(
                {"incident": incident.id, "resolved": row.id, "seconds": seconds}
            )
            week(incident.time_us).restore_seconds.append(seconds)
    history.unresolved.extend(r.id for r in open_incidents)


def _median(values: Iterable[float]) -> float | None:
    listed = list(values)
    return float(statistics.median(listed)) if listed else None


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def _evidence(ids: Sequence[Any], limit: int, *, total: int | None = None) -> dict[str, Any]:
    count = len(ids) if total is None else total
    return {"total": count, "items": list(ids[:limit]), "truncated": count > limit}


async def get_dora_metrics(
    db: Database,
    principal: Principal,
    *,
    from_: str | None = "-90d",
    to: str | None = "now",
    service: str | None = None,
    environment: str | None = None,
    timezone: str | None = None,
    default_timezone: str = "UTC",
    evidence_limit: int = DEFAULT_EVIDENCE,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Deployment frequency, lead time for changes, change failure rate and time to restore
    of the organization (or one service, one environment) from `from_` to `to`, by week."""
    if not 0 <= evidence_limit <= MAX_EVIDENCE:
        raise ValidationFailed.field("evidence_limit", f"0 to {MAX_EVIDENCE}")
    for name, value in (("service", service), ("environment", environment)):
        if value is not None and (not value.strip() or len(value) > 200 or "\x00" in value):
            raise ValidationFailed.field(name, "a name of 1 to 200 characters")
    now = now or clock.now()
    if (from_ or "").strip().lower().replace("-", " ") in _QUARTER:
        from_ = _quarter_start(now, timezone, default_timezone).isoformat()
    rng = resolve_range(
        principal, from_ or "-90d", to, timezone, default_timezone=default_timezone, now=now
    )
    from_us, to_us = clock.to_us(rng.effective_start), clock.to_us(rng.end)
    if to_us - from_us > MAX_RANGE_DAYS * _DAY_US:
        raise ValidationFailed.field("from", f"a range of at most {MAX_RANGE_DAYS} days")
    services = (service.strip(),) if service else ()
    env = environment.strip() if environment else None
    operations = await db.read_one(
        dora_rows,
        principal.org_id,
        "operations",
        # Deployments before the range shipped what was merged before it.
        from_us=from_us - MERGE_LOOKBACK_US,
        to_us=to_us + RESOLVE_LOOKAHEAD_US,
        services=services,
        environment=env,
    )
    changes = await db.read_one(
        dora_rows,
        principal.org_id,
        "changes",
        from_us=from_us - MERGE_LOOKBACK_US,
        to_us=to_us,
        services=services,
    )
    history = compute_dora(operations, changes, from_us=from_us, to_us=to_us, tz=rng.tz)
    return _render(history, rng, from_us, to_us, service, env, evidence_limit)


_QUARTER: Final = frozenset({"quarter", "this quarter"})


def _quarter_start(now: datetime, timezone: str | None, default_timezone: str) -> datetime:
    """The first day of the quarter holding `now`, at 00:00 in the asked zone."""
    try:
        tz = resolve_timezone(timezone, default=default_timezone)
    except TimeExpressionError as error:
        raise ValidationFailed.field("timezone", str(error)) from None
    local = now.astimezone(tz)
    return datetime(local.year, 3 * ((local.month - 1) // 3) + 1, 1, tzinfo=tz)


def _render(
    history: DoraHistory,
    rng: Any,
    from_us: int,
    to_us: int,
    service: str | None,
    environment: str | None,
    limit: int,
) -> dict[str, Any]:
    days = max((to_us - from_us) / _DAY_US, 1 / 24)
    deployed = len(history.deployments)
    per_day = deployed / days
    attempted = len(history.attempted)
    rate = len(history.failures) / attempted if attempted else None
    lead = _median(s[2] for s in history.shipped)
    restore = _median(r["seconds"] for r in history.restored)
    weeks = []
    start = week_start(from_us, rng.tz)
    end = clock.from_us(to_us)
    while start < end:
        w = history.weeks.get(start, _Week())
        weeks.append(
            {
                "week": start.date().isoformat(),
                "partial": clock.to_us(start) < from_us
                or clock.to_us(start + timedelta(days=7)) > to_us,
                "deployments": len(w.deployments),
                "failed_deployments": w.failures,
                "change_failure_rate": round(w.failures / w.attempted, 4) if w.attempted else None,
                "lead_time_median_seconds": _median(w.lead_seconds),
                "changes_shipped": len(w.lead_seconds),
                "time_to_restore_median_seconds": _median(w.restore_seconds),
                "incidents_restored": len(w.restore_seconds),
            }
        )
        start = _next_week(start, rng.tz)
    answer: dict[str, Any] = {
        "from": rng.effective_start.astimezone(rng.tz).isoformat(),
        "to": rng.end.astimezone(rng.tz).isoformat(),
        "timezone": rng.tz.key,
        "service": service,
        "environment": environment,
        "edition": EDITION,
        "deployment_frequency": {
            "deployments": deployed,
            "per_day": round(per_day, 4),
            "per_week": round(per_day * 7, 3),
            "level": level_of("deployment_frequency", per_day) if deployed or days >= 1 else None,
            "events": _evidence(history.deployments, limit),
        },
        "lead_time": {
            "median_seconds": lead,
            "median": _duration(lead),
            "changes": len(history.shipped),
            "level": level_of("lead_time", lead),
            "events": _evidence(
                [
                    {"change": c, "deployment": d, "seconds": seconds}
                    for c, d, seconds in history.shipped[:limit]
                ],
                limit,
                total=len(history.shipped),
            ),
        },
        "change_failure_rate": {
            "rate": None if rate is None else round(rate, 4),
            "failed": len(history.failures),
            "deployments": attempted,
            "level": level_of("change_failure_rate", rate),
            "events": _evidence(history.failures, limit),
        },
        "time_to_restore": {
            "median_seconds": restore,
            "median": _duration(restore),
            "restored": len(history.restored),
            "unresolved": len(history.unresolved),
            "level": level_of("time_to_restore", restore),
            "events": _evidence(history.restored, limit),
            "unresolved_events": _evidence(history.unresolved, limit),
        },
        "weeks": weeks,
    }
    answer["summary"] = _summary_text(answer)
    return answer


def _summary_text(a: dict[str, Any]) -> str:
    scope = " ".join(
        p
        for p in (
            a["service"] or "all services",
            f"in {a['environment']}" if a["environment"] else "in every environment",
        )
        if p
    )
    df, lt, cfr, ttr = (
        a["deployment_frequency"],
        a["lead_time"],
        a["change_failure_rate"],
        a["time_to_restore"],
    )
    rate = (
        f"{cfr['rate'] * 100:.1f}% ({cfr['failed']} of {cfr['deployments']})"
        if cfr["rate"] is not None
        else "n/a (no deployments)"
    )
    parts = [
        f"DORA metrics of {scope}, {a['from'][:10]} to {a['to'][:10]} (levels: {a['edition']}):",
        (
            f"deployment frequency {df['deployments']} deployments, {df['per_week']}/week "
            f"({df['level'] or 'n/a'});"
        ),
        (
            f"lead time for changes median {lt['median'] or 'n/a'} over {lt['changes']} "
            f"changes ({lt['level'] or 'n/a'});"
        ),
        f"change failure rate {rate} ({cfr['level'] or 'n/a'});",
        f"time to restore median {ttr['median'] or 'n/a'} over {ttr['restored']} incidents"
        + (f", {ttr['unresolved']} unresolved" if ttr["unresolved"] else "")
        + f" ({ttr['level'] or 'n/a'}).",
    ]
    return " ".join(parts)
