"""Ingestion: validate a request's events, store the valid ones once, report every item."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trailmap import clock
from trailmap.accounts import quotas
from trailmap.accounts.principal import Principal
from trailmap.errors import ErrorDetail, QuotaExceeded, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import events as store
from trailmap.storage import usage as usage_store
from trailmap.timeline.events import EventRow, validate_event

__all__ = ["IngestResult", "ingest_events", "require_some_items"]


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


def _reject(result: IngestResult, detail: ErrorDetail) -> None:
    entry: dict[str, Any] = {"index": detail.index, "code": detail.code, "message": detail.message}
    if detail.field is not None:
        entry["field"] = detail.field
    result.rejected.append(entry)


async def ingest_events(
    db: Database,
    principal: Principal,
    items: list[object],
    *,
    max_event_bytes: int,
    now: datetime | None = None,
) -> IngestResult:
    """Store the valid events among `items`; nothing valid is dropped for a neighbour's sake."""
    principal.require_write()
    now = now or clock.now()
    retention_start = now - timedelta(days=principal.retention_days)
    result = IngestResult()
    rows: list[EventRow] = []
    seen: dict[tuple[str, str], EventRow] = {}
    in_batch_duplicates: list[tuple[EventRow, EventRow]] = []
    for index, item in enumerate(items):
        outcome = validate_event(item, index=index, now=now, max_bytes=max_event_bytes)
        if isinstance(outcome, list):
            for detail in outcome:
                _reject(result, detail)
            continue
        if outcome.values["time_us"] < clock.to_us(retention_start):
            _reject(
                result,
                ErrorDetail(
                    field="time",
                    index=index,
                    message=(
                        f"time is older than this organization's retention window of "
                        f"{principal.retention_days} days, so the event could never be queried"
                    ),
                ),
            )
            continue
        first = seen.get(outcome.key)
        if first is not None:
            in_batch_duplicates.append((outcome, first))
            continue
        seen[outcome.key] = outcome
        rows.append(outcome)

    stored = await db.write(_store, principal, rows, now) if rows else None
    if stored is not None:
        refused = {id(r) for r in stored.quota_refused}
        for row in rows:
            if id(row) in refused:
                continue
            if row.key in stored.inserted:
                result.accepted.append(_item(row, row.values["id"]))
            else:
                result.duplicates.append(_item(row, stored.existing.get(row.key)))
        for row in stored.quota_refused:
            assert stored.refusal is not None  # noqa: S101 - set whenever rows are refused
            _reject(
                result,
                ErrorDetail(
                    field=None,
                    index=row.index,
                    message=stored.refusal.message,
                    code="QUOTA_EXCEEDED",
                ),
            )
        if stored.refusal is not None and not result.accepted and not result.duplicates:
            raise stored.refusal
    for row, first in in_batch_duplicates:
        first_id = first.values["id"] if stored and first.key in stored.inserted else None
        result.duplicates.append(
            _item(row, first_id or (stored.existing.get(first.key) if stored else None))
        )
    result.rejected.sort(key=lambda r: r["index"])
    result.duplicates.sort(key=lambda r: r["index"])
    return result


def _item(row: EventRow, stored_id: str | None) -> dict[str, Any]:
    return {
        "index": row.index,
        "id": stored_id,
        "source": row.values["source"],
        "event_id": row.values["event_id"],
    }


def _store(conn: Connection, principal: Principal, rows: list[EventRow], now: datetime) -> _Stored:
    """Runs in one transaction: the quota check, the count and the insert agree."""
    org_id = principal.org_id
    refusal: QuotaExceeded | None = None
    refused: list[EventRow] = []
    plan = principal.plan
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
        inserted = store.insert_events(conn, org_id, [r.values for r in rows])
    else:
        inserted = store.insert_events(conn, org_id, [r.values for r in rows])
        usage_store.add_usage(conn, org_id, "events/month", quotas.month_period(now), len(inserted))
        existing = {}
    missing = [r.key for r in rows if r.key not in inserted and r.key not in existing]
    if missing:
        existing.update(store.find_existing(conn, org_id, missing))
    return _Stored(inserted=inserted, existing=existing, quota_refused=refused, refusal=refusal)


def require_some_items(items: list[object], *, max_batch: int) -> None:
    """A batch must hold 1 to `max_batch` events."""
    if not items:
        raise ValidationFailed("The batch is empty; send at least one event.")
    if len(items) > max_batch:
        raise ValidationFailed.field(
            "body", f"a batch holds at most {max_batch} events; this one has {len(items)}"
        )
