"""Plans: how long an organization's events are kept and how much it may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["PLANS", "Plan", "PlanName", "get_plan"]

PlanName = Literal["self-hosted", "free", "starter", "pro"]


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan's limits; `None` means no limit."""

    name: PlanName
    retention_days: int
    events_per_month: int | None
    events_per_day: int | None
    api_keys: int | None
    members: int | None
    mcp_calls_per_month: int | None
    spans_per_day: int | None = None
    metric_points_per_day: int | None = None
    series: int | None = None  # distinct metric series kept at once
    # Only self-hosted organizations choose their own retention window.
    retention_configurable: bool = False


PLANS: Final[dict[str, Plan]] = {
    "self-hosted": Plan(
        "self-hosted", 365, None, None, None, None, None, retention_configurable=True
    ),
    "free": Plan("free", 7, 1_000, 100, 2, 2, 100, 1_000_000, 100_000, 1_000),
    "starter": Plan("starter", 30, 20_000, 500, 10, 10, 500, 10_000_000, 1_000_000, 10_000),
    "pro": Plan("pro", 90, 50_000, 1_000, 50, 50, 2_500, 50_000_000, 5_000_000, 50_000),
}


def get_plan(name: str) -> Plan:
    try:
        return PLANS[name]
    except KeyError:
        known = ", ".join(PLANS)
        raise ValueError(f"unknown plan {name!r}; choose one of {known}") from None
