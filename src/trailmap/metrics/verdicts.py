"""A deployment's automatic verdict: once its "after" window has passed, the comparison of
`get_metrics_around_event` is reached once, by whichever app node takes the lease, and
stored beside the event (docs/metrics.md, "Verdicts that arrive on their own")."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from trailmap import clock
from trailmap.accounts.organizations import Organization, list_orgs
from trailmap.accounts.principal import Principal
from trailmap.errors import TrailmapError
from trailmap.metrics.around import WINDOWS, get_metrics_around_event
from trailmap.notifications.triggers import Trigger, enqueue
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Connection, Database
from trailmap.storage import verdicts as store
from trailmap.timeline.queries import get_event

__all__ = [
    "VERDICTS",
    "DeployVerdict",
    "VerdictRun",
    "deployment_verdict",
    "node_id",
    "reach_due_verdicts",
]

DeployVerdict = Literal["regressed", "no_significant_change", "improved", "not_enough_data"]
VERDICTS: Final[tuple[DeployVerdict, ...]] = (
    "regressed",
    "no_significant_change",
    "improved",
    "not_enough_data",
)
# The metrics that judge a deployment, each worse when it rises. Throughput is compared and
# shown but judges nothing: traffic moves with the hour, not with the code.
_WORSE_WHEN_HIGHER: Final = ("error_rate", "p50_latency", "p95_latency", "p99_latency")
_HOUR_US: Final = 3_600_000_000
# Points pushed a little late still count: a verdict waits this long past its window.
GRACE_US: Final = 60_000_000
# Deployments older than this without a verdict are left alone (a node down for days does not
# wake to a backlog of comparisons nobody will read).
LOOKBACK_US: Final = 3 * 24 * _HOUR_US
# After this many failed attempts (a Prometheus that never answers), `not_enough_data`.
MAX_ATTEMPTS: Final = 5
_PER_ORG: Final = 50  # verdicts one run reaches per organization at most


def node_id() -> str:
    """This app node's name in the leases it holds: host, process and a random part."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def deployment_verdict(metrics: Sequence[dict[str, Any]]) -> DeployVerdict:
    """The deployment's verdict from its metrics' verdicts (compare.py's increased,
    decreased, no significant change, not enough data): regressed when the error rate or a
    latency rose; improved when none rose and one fell; not_enough_data when none of them
    could be compared; no_significant_change otherwise."""
    judged = [m for m in metrics if m.get("name") in _WORSE_WHEN_HIGHER]
    if any(m["verdict"] == "increased" for m in judged):
        return "regressed"
    if any(m["verdict"] == "decreased" for m in judged):
        return "improved"
    if all(m["verdict"] == "not enough data" for m in judged):
        return "not_enough_data"
    return "no_significant_change"


@dataclass(frozen=True, slots=True)
class VerdictRun:
    """What one run of the job did."""

    reached: int = 0  # verdicts stored by this node
    lost: int = 0  # leases lost, or claims another node held
    failed: int = 0  # attempts that raised; tried again next run


def _principal(org: Organization) -> Principal:
    # The job reads as a READ_ONLY caller of the organization would: same scoping, no more.
    return Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="READ_ONLY",
        key_name="the verdict job",
    )


def _details(answer: dict[str, Any], window: str) -> dict[str, Any]:
    """What is kept of the comparison: each metric's verdict and change, and the summary."""
    metrics = [
        {
            k: m.get(k)
            for k in ("name", "verdict", "source", "relative_change", "p_value")
            if m.get(k) is not None
        }
        for m in answer.get("metrics", [])
    ]
    return {
        "window": window,
        "service": answer.get("service"),
        "environment": answer.get("environment"),
        "metrics": metrics,
        "summary": answer.get("summary"),
    }


async def reach_due_verdicts(
    db: Database,
    *,
    node: str,
    window: str = "2h",
    lease_seconds: float = 120.0,
    outbound: OutboundPolicy,
    secret_key: str | None = None,
    now: datetime | None = None,
) -> VerdictRun:
    """Reach the verdict of every deployment whose after window (plus a minute's grace) has
    passed and that has none, organization by organization. Any node may run this at any
    time: each verdict is claimed with a lease first and stored only by its holder, once."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    now = now or clock.now()
    now_us = clock.to_us(now)
    span_us = WINDOWS[window] * _HOUR_US
    reached = lost = failed = 0
    for org in await list_orgs(db):
        due = await db.read(
            store.due_deployments,
            org.id,
            from_us=now_us - LOOKBACK_US,
            to_us=now_us - span_us - GRACE_US,
            now_us=now_us,
            limit=_PER_ORG,
        )
        principal = _principal(org)
        for row in due:
            expires_us = now_us + int(lease_seconds * 1_000_000)
            attempt = await db.write(
                store.claim_verdict, org.id, row["id"], node, now_us, expires_us
            )
            if attempt is None:
                lost += 1
                continue
            try:
                verdict, details = await _compare(
                    db, principal, row["id"], window, outbound, secret_key, now
                )
            except TrailmapError as error:
                if attempt < MAX_ATTEMPTS:
                    await db.write(store.release_verdict, org.id, row["id"], node)
                    failed += 1
                    continue
                verdict = "not_enough_data"
                details = {"window": window, "error": error.message[:500]}
            stored = await _store(
                db, principal, row["id"], node, verdict, details, now, default_tz="UTC"
            )
            reached += stored
            lost += not stored
    return VerdictRun(reached=reached, lost=lost, failed=failed)


async def _compare(
    db: Database,
    principal: Principal,
    event_id: str,
    window: str,
    outbound: OutboundPolicy,
    secret_key: str | None,
    now: datetime,
) -> tuple[DeployVerdict, dict[str, Any]]:
    answer = await get_metrics_around_event(
        db,
        principal,
        event_id,
        window=window,
        outbound=outbound,
        secret_key=secret_key,
        now=now,
    )
    return deployment_verdict(answer["metrics"]), _details(answer, window)


async def _store(
    db: Database,
    principal: Principal,
    event_id: str,
    node: str,
    verdict: DeployVerdict,
    details: dict[str, Any],
    now: datetime,
    *,
    default_tz: str,
) -> bool:
    """Store the verdict, and queue the notifications of a regression in the same
    transaction: a regression is told if and only if its verdict is stored."""
    now_us = clock.to_us(now)
    event: dict[str, Any] | None = None
    if verdict == "regressed":
        event = await get_event(db, principal, event_id, default_timezone=default_tz, now=now)
        event["verdict"] = verdict

    def write(conn: Connection) -> bool:
        if not store.store_verdict(
            conn, principal.org_id, event_id, node, verdict, details, now_us
        ):
            return False
        if event is not None:
            enqueue(conn, principal.org_id, [Trigger("verdict", event, verdict=verdict)], now_us)
        return True

    return await db.write(write)
