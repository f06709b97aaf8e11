"""Quotas: counting what an organization uses and refusing what its plan does not allow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from trailmap import clock
from trailmap.accounts.plans import Plan
from trailmap.accounts.principal import Principal
from trailmap.errors import QuotaExceeded
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as account_store
from trailmap.storage import metrics as metric_store
from trailmap.storage import usage as store

__all__ = [
    "Metric",
    "Usage",
    "check_and_count",
    "count_mcp_call",
    "day_period",
    "meter",
    "meter_sync",
    "month_period",
    "refusal",
    "seconds_until_reset",
    "usage_report",
    "usage_this_month",
]

Metric = Literal["events", "mcp_calls", "spans", "metric_points"]
_METRICS: tuple[Metric, ...] = ("events", "mcp_calls", "spans", "metric_points")
_WORDS: dict[Metric, str] = {
    "events": "events",
    "mcp_calls": "MCP calls",
    "spans": "spans",
    "metric_points": "metric points",
}


def day_period(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def month_period(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m")


def seconds_until_reset(now: datetime, *, monthly: bool) -> int:
    now = now.astimezone(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if monthly:
        first = day_start.replace(day=1)
        reset = (first + timedelta(days=32)).replace(day=1)
    else:
        reset = day_start + timedelta(days=1)
    return max(1, int((reset - now).total_seconds()) + 1)


def _limits(plan: Plan, metric: Metric) -> tuple[int | None, int | None]:
    """(per day, per month) for a metric; None is no limit."""
    if metric == "events":
        return plan.events_per_day, plan.events_per_month
    if metric == "spans":
        return plan.spans_per_day, None
    if metric == "metric_points":
        return plan.metric_points_per_day, None
    return None, plan.mcp_calls_per_month


def refusal(
    plan: Plan, metric: Metric, conn: Connection, org_id: str, now: datetime
) -> QuotaExceeded:
    """The 429 to give when nothing is left: it names the limit hit and when it resets."""
    per_day, per_month = _limits(plan, metric)
    what = _WORDS[metric]
    if (
        per_day is not None
        and store.get_usage(conn, org_id, f"{metric}/day", day_period(now)) >= per_day
    ):
        return QuotaExceeded(
            f"The {plan.name} plan allows {per_day} {what} a day and today's are used up; "
            "the count resets at midnight UTC.",
            retry_after=seconds_until_reset(now, monthly=False),
        )
    return QuotaExceeded(
        f"The {plan.name} plan allows {per_month} {what} a month and this month's are used up; "
        "the count resets on the first of the month (UTC).",
        retry_after=seconds_until_reset(now, monthly=True),
    )


def check_and_count(
    conn: Connection, org_id: str, plan: Plan, metric: Metric, amount: int, now: datetime
) -> int:
    """Count `amount` units of use, or as many as the plan still allows; return how many.

    Runs inside the transaction that stores the work, so the count and the work agree; each
    counter is added to and read back in one statement, so concurrent requests (on any app
    node) cannot all take the last units from the same stale count."""
    if amount <= 0:
        return 0
    per_day, per_month = _limits(plan, metric)
    granted = amount
    counted: list[tuple[str, str]] = []
    for limit, key, period in (
        (per_day, f"{metric}/day", day_period(now)),
        (per_month, f"{metric}/month", month_period(now)),
    ):
        after = store.add_usage_returning(conn, org_id, key, period, amount)
        counted.append((key, period))
        if limit is not None:
            granted = min(granted, max(0, limit - (after - amount)))
    if granted < amount:
        # Give back what was not granted, to every counter that took it.
        for key, period in counted:
            store.add_usage_returning(conn, org_id, key, period, granted - amount)
    return granted


async def meter(db: Database, principal: Principal, metric: Metric, amount: int) -> None:
    """Count `amount` against the plan, all of it or none: `QuotaExceeded` (429, with when
    it resets) when the plan has not that much left. Nothing is written for a plan without
    a limit on `metric`."""
    if _metered(principal, metric, amount):
        await db.write(_meter, principal, metric, amount)


def meter_sync(db: Database, principal: Principal, metric: Metric, amount: int) -> None:
    """`meter`, for a caller on a worker thread."""
    if _metered(principal, metric, amount):
        db.write_sync(_meter, principal, metric, amount)


def _metered(principal: Principal, metric: Metric, amount: int) -> bool:
    per_day, per_month = _limits(principal.plan, metric)
    return amount > 0 and (per_day is not None or per_month is not None)


def _meter(conn: Connection, principal: Principal, metric: Metric, amount: int) -> None:
    now = clock.now()
    org_id, plan = principal.org_id, principal.plan
    granted = check_and_count(conn, org_id, plan, metric, amount, now)
    if granted < amount:
        refused = refusal(plan, metric, conn, org_id, now)
        if granted:  # all or none: give back what was taken
            _give_back(conn, org_id, metric, granted, now)
        raise refused


def _give_back(conn: Connection, org_id: str, metric: Metric, amount: int, now: datetime) -> None:
    store.add_usage_returning(conn, org_id, f"{metric}/day", day_period(now), -amount)
    store.add_usage_returning(conn, org_id, f"{metric}/month", month_period(now), -amount)


async def count_mcp_call(db: Database, principal: Principal) -> None:
    """Count one MCP tool call against the plan's monthly quota, or refuse it (429)."""
    if principal.plan.mcp_calls_per_month is not None:
        await db.write(_count_call, principal)


def _count_call(conn: Connection, principal: Principal) -> None:
    now = clock.now()
    granted = check_and_count(conn, principal.org_id, principal.plan, "mcp_calls", 1, now)
    if granted == 0:
        raise refusal(principal.plan, "mcp_calls", conn, principal.org_id, now)


async def usage_this_month(db: Database, org_id: str, now: datetime) -> dict[Metric, int]:
    """What the organization has used of each metered quantity since the month began."""
    month = month_period(now)

    def _read(conn: Connection) -> dict[Metric, int]:
        return {m: store.get_usage(conn, org_id, f"{m}/month", month) for m in _METRICS}

    return await db.read(_read)


@dataclass(frozen=True, slots=True)
class Usage:
    """One quota of a plan: what is used of it (None where the plan counts nothing, having no
    limit) against its limit (None: no limit)."""

    name: str
    what: str
    used: int | None
    limit: int | None

    @property
    def share(self) -> float | None:
        """The part of the limit used, 0 to 1 (more when over), or None without a limit."""
        if self.used is None or self.limit is None:
            return None
        return self.used / self.limit if self.limit else 1.0

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "what": self.what, "used": self.used, "limit": self.limit}


async def usage_report(
    db: Database, org_id: str, plan: Plan, now: datetime | None = None
) -> list[Usage]:
    """Every quota of the organization's plan with what is used of it now: the counters of
    today and this month, and the series, keys and members it holds."""
    now = now or clock.now()
    day, month = day_period(now), month_period(now)

    def _read(conn: Connection) -> list[Usage]:
        def counter(name: str, what: str, key: str, period: str, limit: int | None) -> Usage:
            # Events a month are counted on every plan; the rest only where a limit needs it.
            counted = limit is not None or key == "events/month"
            used = store.get_usage(conn, org_id, key, period) if counted else None
            return Usage(name, what, used, limit)

        return [
            counter("events_per_day", "events today", "events/day", day, plan.events_per_day),
            counter(
                "events_per_month",
                "events this month",
                "events/month",
                month,
                plan.events_per_month,
            ),
            counter(
                "mcp_calls_per_month",
                "MCP calls this month",
                "mcp_calls/month",
                month,
                plan.mcp_calls_per_month,
            ),
            counter("spans_per_day", "spans today", "spans/day", day, plan.spans_per_day),
            counter(
                "metric_points_per_day",
                "metric points today",
                "metric_points/day",
                day,
                plan.metric_points_per_day,
            ),
            Usage(
                "series",
                "metric series kept",
                metric_store.count_series(conn, org_id, lock=False),
                plan.series,
            ),
            Usage(
                "api_keys",
                "active API keys",
                account_store.count_active_keys(conn, org_id, clock.to_us(now)),
                plan.api_keys,
            ),
            Usage("members", "members", account_store.count_members(conn, org_id), plan.members),
        ]

    return await db.read(_read)
