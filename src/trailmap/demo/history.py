"""The demo's quarter of delivery history before its week: merged pull requests, the
deployments that shipped them (some failed, some rolled back), and incidents with their
resolutions, as the GitHub integration records them, so that DORA's metrics have something
to measure (docs/dora.md)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from trailmap.demo.traces import ENVIRONMENT, SERVICES

__all__ = ["delivery_history"]

_DAYS = 91
_SKIP_LAST = timedelta(days=7)  # the demo's week has its own changes (demo/load.py)


def _sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def delivery_history(now: datetime, *, seed: int = 7) -> Iterator[dict[str, object]]:
    """Events from 13 weeks before `now` to a week before it, the same for the same seed and
    day."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    start = (now - timedelta(days=_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = now - _SKIP_LAST
    pr = 100
    for service in SERVICES:
        source = f"//github.com/acme/{service}"
        day = start
        while day < end:
            if day.weekday() >= 5:  # Saturday and Sunday: nobody merges
                day += timedelta(days=1)
                continue
            merged: list[tuple[datetime, str]] = []
            for _ in range(rng.randint(0, 3)):
                pr += 1
                at = day + timedelta(hours=9, minutes=rng.randint(0, 8 * 60))
                sha = _sha(seed, service, pr)
                merged.append((at, sha))
                yield {
                    "specversion": "1.0",
                    "id": f"demo-merge-{service}-{pr}",
                    "type": "change-merged",
                    "source": source,
                    "time": at.isoformat(),
                    "service": service,
                    "version": sha[:7],
                    "data": {
                        "description": f"Merged pull request #{pr} into main",
                        "number": pr,
                        "sha": sha,
                        "ref": "main",
                        "repository": f"acme/{service}",
                    },
                }
            if merged:
                yield from _deploy(rng, service, source, max(merged), pr)
            day += timedelta(days=1)
        # A few incidents a quarter, each resolved within hours.
        for n in range(rng.randint(2, 4)):
            at = start + timedelta(minutes=rng.randint(0, (end - start).days * 24 * 60 - 600))
            restored = at + timedelta(minutes=rng.randint(15, 300))
            common = {"specversion": "1.0", "source": source, "service": service}
            yield {
                **common,
                "id": f"demo-incident-{service}-{n}",
                "type": "incident",
                "time": at.isoformat(),
                "subject": ENVIRONMENT,
                "severity": "MAJOR",
                "data": {"description": f"Elevated errors on {service}"},
            }
            yield {
                **common,
                "id": f"demo-incident-{service}-{n}-resolved",
                "type": "incident-resolved",
                "time": restored.isoformat(),
                "subject": ENVIRONMENT,
                "data": {"description": f"Errors on {service} back to normal"},
            }


def _deploy(
    rng: random.Random, service: str, source: str, last: tuple[datetime, str], pr: int
) -> Iterator[dict[str, object]]:
    """The day's deployment of the last merged commit, a few hours after it."""
    merged_at, sha = last
    at = merged_at + timedelta(minutes=rng.randint(20, 6 * 60))
    failed = rng.random() < 0.08  # one deployment in twelve fails
    yield {
        "specversion": "1.0",
        "id": f"demo-deploy-{service}-{pr}",
        "type": "deployment",
        "source": source,
        "time": at.isoformat(),
        "subject": ENVIRONMENT,
        "service": service,
        "version": sha[:7],
        **({"severity": "MAJOR"} if failed else {}),
        "data": {
            "description": f"Deployment of {service} {sha[:7]} to {ENVIRONMENT}"
            + (" failed" if failed else ""),
            "status": "failed" if failed else "succeeded",
            "sha": sha,
        },
    }
    if not failed and rng.random() < 0.05:
        yield {
            "specversion": "1.0",
            "id": f"demo-rollback-{service}-{pr}",
            "type": "rollback",
            "source": source,
            "time": (at + timedelta(minutes=rng.randint(10, 90))).isoformat(),
            "subject": ENVIRONMENT,
            "service": service,
            "data": {"description": f"Rolled {service} back from {sha[:7]}"},
        }
