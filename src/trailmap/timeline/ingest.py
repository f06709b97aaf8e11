"""Ingestion: validate a request's events, store the valid ones once, report every item."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from trailmap import clock
from trailmap.accounts import quotas
from trailmap.accounts.organizations import Organization
from trailmap.accounts.plans import Plan
from trailmap.accounts.principal import Principal
from trailmap.errors import ErrorDetail, QuotaExceeded, ValidationFailed
from trailmap.guardrails.guardrails import flag_deployments
from trailmap.notifications.triggers import Trigger, enqueue
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as account_store
from trailmap.storage import events as store
from trailmap.storage import usage as usage_store
from trailmap.telemetry import count_events
from trailmap.timeline.events import EventRow, validate_event

__all__ = [
    "Alongside",
    "IngestResult",
    "ingest_events",
    "record_derived_events",
    "require_some_items",
]

# What a caller writes in the events' own transaction, given the ids of the events stored now
# and of those stored before (a webhook delivery's record): called only when there are some.
Alongside = Callable[[Connection, list[str], list[str]], None]

UTC_ZONE = ZoneInfo("UTC")

# An event derived from other data carries a few fields: far below any request's limit.
_DERIVED_EVENT_BYTES = 10 * 1024


@dataclass(slots=True)
class IngestResult:
    """Per item: accepted (stored now), duplicate (stored before), or rejected (and why)."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "counts": {
                "accepted": len(self.accepted),
                "duplicates": len(self.duplicates),
                "rejected": len(self.rejected),
            },
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }


@dataclass(slots=True)
class _Stored:
    inserted: set[tuple[str, str]]
    existing: dict[tuple[str, str], str]
    quota_refused: list[EventRow]
    refusal: QuotaExceeded | None
    # The guardrail violations of the deployments among the rows, by (source, event_id).
    violations: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def nothing(cls) -> _Stored:
        return cls(inserted=set(), existing={}, quota_refused=[], refusal=None)


def _reject(result: IngestResult, detail: ErrorDetail) -> None:
    result.rejected.append(
        {
            "index": detail.index,
            "code": detail.code,
            "field": detail.field,
            "message": detail.message,
        }
    )


async def ingest_events(
    db: Database,
    principal: Principal,
    items: list[object],
    *,
    max_event_bytes: int,
    now: datetime | None = None,
    alongside: Alongside | None = None,
) -> IngestResult:
    """Store the valid events among `items`; nothing valid is dropped for a neighbour's sake.
    `alongside` writes in the same transaction, once the events' ids are known."""
    principal.require_write()
    now = now or clock.now()
    result = IngestResult()
    rows, repeats = _validate_all(principal, items, now, max_event_bytes, result)
    stored = (
        await db.write(_store_with, principal.org_id, principal.plan, rows, now, alongside)
        if rows
        else _Stored.nothing()
    )
    refused = {id(r) for r in stored.quota_refused}
    for row in rows:
        if id(row) in refused:
            continue
        if row.key in stored.inserted:
            item = _item(row, row.values["id"])
            if violations := stored.violations.get(row.key):
                item["violations"] = violations
            result.accepted.append(item)
        else:
            result.duplicates.append(_item(row, stored.existing.get(row.key)))
    if stored.refusal is not None:
        for row in stored.quota_refused:
            _reject(result, _quota_detail(row, stored.refusal))
        if not result.accepted and not result.duplicates:
            raise stored.refusal
    for row, first in repeats:
        first_id = first.values["id"] if first.key in stored.inserted else None
        result.duplicates.append(_item(row, first_id or stored.existing.get(first.key)))
    result.rejected.sort(key=lambda r: r["index"])
    result.duplicates.sort(key=lambda r: r["index"])
    count_events(
        accepted=len(result.accepted),
        duplicates=len(result.duplicates),
        rejected=len({r["index"] for r in result.rejected}),  # an item may fail twice
    )
    return result


def _validate_all(
    principal: Principal,
    items: list[object],
    now: datetime,
    max_event_bytes: int,
    result: IngestResult,
) -> tuple[list[EventRow], list[tuple[EventRow, EventRow]]]:
    """The valid, distinct rows to store, and the repeats within the request (with their first)."""
    oldest_us = clock.to_us(now - timedelta(days=principal.retention_days))
    rows: list[EventRow] = []
    seen: dict[tuple[str, str], EventRow] = {}
    repeats: list[tuple[EventRow, EventRow]] = []
    for index, item in enumerate(items):
        outcome = validate_event(item, index=index, now=now, max_bytes=max_event_bytes)
        if isinstance(outcome, list):
            for detail in outcome:
                _reject(result, detail)
        elif outcome.values["time_us"] < oldest_us:
            _reject(result, _too_old(index, principal.retention_days))
        elif outcome.key in seen:
            repeats.append((outcome, seen[outcome.key]))
        else:
            seen[outcome.key] = outcome
            rows.append(outcome)
    return rows, repeats


def _too_old(index: int, days: int) -> ErrorDetail:
    return ErrorDetail(
        field="time",
        index=index,
        message=(
            f"time is older than this organization's retention window of {days} days, "
            "so the event could never be queried"
        ),
    )


def _quota_detail(row: EventRow, refusal: QuotaExceeded) -> ErrorDetail:
    return ErrorDetail(field=None, index=row.index, message=refusal.message, code="QUOTA_EXCEEDED")


def _item(row: EventRow, stored_id: str | None) -> dict[str, Any]:
    return {
        "index": row.index,
        "id": stored_id,
        "source": row.values["source"],
        "event_id": row.values["event_id"],
    }


def _store_with(
    conn: Connection,
    org_id: str,
    plan: Plan,
    rows: list[EventRow],
    now: datetime,
    alongside: Alongside | None,
) -> _Stored:
    stored = _store(conn, org_id, plan, rows, now)
    if alongside is not None:
        made = [r.values["id"] for r in rows if r.key in stored.inserted]
        known = [stored.existing[r.key] for r in rows if r.key in stored.existing]
        if made or known:
            alongside(conn, made, known)
    return stored


def _store(
    conn: Connection, org_id: str, plan: Plan, rows: list[EventRow], now: datetime
) -> _Stored:
    """Runs in one transaction: the quota check, the count and the insert agree."""
    refusal: QuotaExceeded | None = None
    refused: list[EventRow] = []
    if plan.events_per_day is not None or plan.events_per_month is not None:
        # Duplicates cost nothing: find them before counting against the quota.
        existing = store.find_existing(conn, org_id, [r.key for r in rows])
        fresh = [r for r in rows if r.key not in existing]
        granted = quotas.check_and_count(conn, org_id, plan, "events", len(fresh), now)
        if granted < len(fresh):
            refused = fresh[granted:]
            refusal = quotas.refusal(plan, "events", conn, org_id, now)
            refused_ids = {id(r) for r in refused}
            rows = [r for r in rows if id(r) not in refused_ids]
        violations = flag_deployments(conn, org_id, [r.values for r in rows])
        inserted = store.insert_events(conn, org_id, [r.values for r in rows])
    else:
        violations = flag_deployments(conn, org_id, [r.values for r in rows])
        inserted = store.insert_events(conn, org_id, [r.values for r in rows])
        usage_store.add_usage(conn, org_id, "events/month", quotas.month_period(now), len(inserted))
        existing = {}
    missing = [r.key for r in rows if r.key not in inserted and r.key not in existing]
    if missing:
        existing.update(store.find_existing(conn, org_id, missing))
    _notify(conn, org_id, [r for r in rows if r.key in inserted], violations, now)
    return _Stored(
        inserted=inserted,
        existing=existing,
        quota_refused=refused,
        refusal=refusal,
        violations=violations,
    )


def _notify(
    conn: Connection,
    org_id: str,
    stored: list[EventRow],
    violations: dict[tuple[str, str], list[dict[str, Any]]],
    now: datetime,
) -> None:
    """Queue, in the events' own transaction, what the organization's notification rules ask
    for the events stored now, with their guardrail violations (docs/notifications.md)."""
    if stored:
        triggers = [Trigger("event", r.values, violations.get(r.key, ())) for r in stored]
        enqueue(conn, org_id, triggers, clock.to_us(now))


def record_derived_events(
    conn: Connection, org_id: str, items: list[dict[str, Any]], *, now: datetime
) -> int:
    """Store events another domain derived (deployments detected in traces) inside the
    caller's transaction, validated and counted against the plan like any other; what the
    quota refuses is not stored. Returns how many were stored."""
    row = account_store.get_org_by_id(conn, org_id)
    if row is None:
        return 0
    org = Organization.from_row(row)
    oldest_us = clock.to_us(now - timedelta(days=org.retention_days))
    rows: list[EventRow] = []
    for index, item in enumerate(items):
        outcome = validate_event(item, index=index, now=now, max_bytes=_DERIVED_EVENT_BYTES)
        if not isinstance(outcome, list) and outcome.values["time_us"] >= oldest_us:
            rows.append(outcome)
    if not rows:
        return 0
    stored = _store(conn, org_id, org.plan, rows, now)
    count_events(accepted=len(stored.inserted), duplicates=0, rejected=0)
    return len(stored.inserted)


def require_some_items(items: list[object], *, max_batch: int) -> None:
    """A batch must hold 1 to `max_batch` events."""
    if not items:
        raise ValidationFailed("The batch is empty; send at least one event.")
    if len(items) > max_batch:
        raise ValidationFailed.field(
            "body", f"a batch holds at most {max_batch} events; this one has {len(items)}"
        )
