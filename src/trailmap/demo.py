"""The demo organization: a believable week of changes across a few services, to play with."""

from __future__ import annotations

import random
from datetime import timedelta

from trailmap import clock
from trailmap.accounts import Principal, create_org, get_org
from trailmap.errors import Conflict
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

__all__ = ["load_demo"]

_SERVICES = ("api-gateway", "checkout", "payments", "orders", "inventory", "search")
_KINDS = (
    ("deployment", None, 0.6),
    ("config-change", "LOW", 0.15),
    ("feature-flag", "LOW", 0.1),
    ("rollback", "MAJOR", 0.05),
    ("incident", "CRITICAL", 0.04),
    ("data-load", None, 0.06),
)


async def load_demo(db: Database, slug: str = "demo", *, seed: int = 7) -> str:
    """Create the organization when missing and add a week of events (idempotent by id)."""
    try:
        org = await create_org(db, slug, name="Demo (Acme Shop)")
    except Conflict:
        org = await get_org(db, slug)
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    now = clock.now()
    versions = dict.fromkeys(_SERVICES, 40)
    events: list[object] = []
    for n in range(220):
        service = rng.choice(_SERVICES)
        kind, severity, _ = rng.choices(_KINDS, weights=[k[2] for k in _KINDS])[0]
        when = now - timedelta(minutes=rng.randint(5, 7 * 24 * 60))
        env = "production" if rng.random() < 0.6 else "staging"
        event: dict[str, object] = {
            "specversion": "1.0",
            "id": f"demo-{n}",
            "type": kind,
            "source": f"//github.com/acme/{service}",
            "time": when.isoformat(),
            "subject": env,
            "service": service,
        }
        if kind == "deployment":
            versions[service] += 1
            event["version"] = f"v1.{versions[service]}.0"
            event["data"] = {"description": f"Deployed {service} v1.{versions[service]}.0 to {env}"}
        else:
            event["data"] = {"description": f"{kind.replace('-', ' ').capitalize()} on {service}"}
        if severity:
            event["severity"] = severity
        events.append(event)
    principal = Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="READ_WRITE",
    )
    result = await ingest_events(db, principal, events, max_event_bytes=10 * 1024, now=now)
    return (
        f"demo organization {org.slug}: {len(result.accepted)} events added, "
        f"{len(result.duplicates)} already there"
    )
