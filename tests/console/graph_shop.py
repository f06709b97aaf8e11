"""A small shop's graph, recorded through the graph domain's own writer (the calls a trace
would prove), for the console's Graph and Service pages:

    frontend -> checkout -> payments -> stripe (external API)
                         -> orders   -> orders-db (database)
                         -> inventory
    search -> catalog  (unrelated to checkout)
"""

from __future__ import annotations

from typing import Any

from tests.factories import event, principal_for
from trailmap import clock
from trailmap.accounts.organizations import Organization
from trailmap.graph.learn.record import record_observations
from trailmap.graph.learn.spans import Observations
from trailmap.graph.model import EdgeKind, NodeKind
from trailmap.graph.stats import Stats
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

__all__ = ["EDGES", "record_shop"]

_MINUTE_US = 60_000_000

EDGES: tuple[tuple[NodeKind, str, NodeKind, str, EdgeKind], ...] = (
    ("service", "frontend", "service", "checkout", "calls"),
    ("service", "checkout", "service", "payments", "calls"),
    ("service", "checkout", "service", "orders", "calls"),
    ("service", "checkout", "service", "inventory", "calls"),
    ("service", "payments", "external_api", "api.stripe.com", "calls"),
    ("service", "orders", "database", "orders-db", "reads_writes"),
    ("service", "search", "service", "catalog", "calls"),
)


async def record_shop(db: Database, org: Organization, *, minutes: int = 10) -> None:
    """Ten minutes of traffic on every edge (a call in eight fails on checkout -> payments),
    each service's own minutes, payments owned by a team, and a deployment of checkout."""
    now = clock.now_us()
    obs = Observations()
    for minute in range(1, minutes + 1):
        at = now - minute * _MINUTE_US
        for source_kind, source, target_kind, target, kind in EDGES:
            src = (source_kind, "production", source)
            dst = (target_kind, "production", target)
            for call in range(8):
                failed = (source, target) == ("checkout", "payments") and call == 0
                obs.edge(src, dst, kind, (at + call, 20.0 + call * 10, failed))
            if target_kind == "service":
                served = Stats()
                for call in range(8):
                    served.add(15.0 + call * 10, error=False)
                obs.add(dst, at, served)
    obs.node(("service", "production", "payments"), now - _MINUTE_US, {"team": "payments-team"})
    await db.write(record_observations, org.id, obs, now)
    principal = principal_for(org)
    deployed: list[Any] = [
        event(source="//github.com/acme/checkout", version="v2.1.0", description="new basket")
    ]
    result = await ingest_events(db, principal, deployed, max_event_bytes=100_000)
    assert len(result.accepted) == 1, result.rejected
