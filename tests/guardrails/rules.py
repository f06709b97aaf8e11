"""Rules built as the API builds them (checked, stored, read back), for the pure tests."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from trailmap import clock
from trailmap.guardrails.evaluate import Deployment, Rules
from trailmap.guardrails.rules import Freeze, Policy, check_freeze, check_policy

__all__ = ["at", "deployment", "freeze", "policy", "violations"]

_ids = itertools.count(1)
_NOW = datetime(2026, 12, 6, tzinfo=UTC)


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    return row | {
        "id": f"00000000-0000-0000-0000-{next(_ids):012d}",
        "created_by": "tests",
        "created_us": 0,
    }


def freeze(**body: Any) -> Freeze:
    return Freeze.from_row(_stored(check_freeze({"name": "freeze", "reason": "why"} | body, _NOW)))


def policy(kind: str, **settings: Any) -> Policy:
    scope = {k: settings.pop(k) for k in ("environments", "services") if k in settings}
    return Policy.from_row(
        _stored(check_policy({"kind": kind, "name": kind, "settings": settings} | scope))
    )


def at(text: str) -> int:
    """Microseconds of an ISO 8601 time with its zone."""
    return clock.to_us(datetime.fromisoformat(text))


def deployment(
    when: str, *, service: str = "checkout", environment: str | None = "production", **more: Any
) -> Deployment:
    return Deployment(service=service, environment=environment, time_us=at(when), **more)


def violations(
    rules: Sequence[Freeze | Policy], dep: Deployment, answers: dict[str, Any] | None = None
) -> list[str]:
    """The kinds of the violations `dep` raises against `rules`, given what was counted."""
    found = Rules(
        [r for r in rules if isinstance(r, Freeze)], [r for r in rules if isinstance(r, Policy)]
    ).violations(dep, answers)
    return [v["kind"] for v in found]
