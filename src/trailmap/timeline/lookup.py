"""Finding one event by the id its asker holds: the id its producer sent (with the source, when
producers used the same id), or Trailmap's own id. REST, MCP and the metrics comparison all
look events up here, so they accept the same ids and refuse them in the same words."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.errors import ErrorDetail, NotFound, ValidationFailed
from trailmap.storage import Database
from trailmap.storage import events as store

__all__ = ["find_event"]

# Trailmap's own ids are UUIDs; a longer id can only be a producer's.
_TRAILMAP_ID_LENGTH: Final = 36
_MAX_ID = 200  # the longest id a producer may send (docs/interfaces.md)
_MAX_SOURCE = 500
# How many events sharing one producer id an ambiguity lists.
_MAX_CANDIDATES = 20


async def find_event(
    db: Database,
    principal: Principal,
    event_id: str,
    *,
    source: str | None = None,
    argument: str = "id",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The stored row of the event `event_id` names, within the retention window.

    `event_id` is the producer's CloudEvents `id` or Trailmap's own id (`trailmap_id`);
    `source` narrows a producer's id to one producer. `argument` is what the asker calls the
    id (`id`, `event_id`), so that a refusal names it.
    """
    now = now or clock.now()
    if source is not None:
        _check_source(source)
    missing = NotFound(
        f"No event with the id {event_id!r}"
        + (f" from the source {source!r}" if source is not None else "")
        + " in this organization."
    )
    if not event_id or len(event_id) > _MAX_ID or "\x00" in event_id:
        raise missing
    oldest_us = clock.to_us(now - timedelta(days=principal.retention_days))
    org_id = principal.org_id
    if len(event_id) <= _TRAILMAP_ID_LENGTH:
        row = await db.read_point(store.get_event, org_id, event_id)
        if (
            row is not None
            and row["time_us"] >= oldest_us
            and (source is None or row["source"] == source)
        ):
            return row
    rows = await db.read_point(
        store.find_by_producer_id, org_id, event_id, source=source, limit=_MAX_CANDIDATES
    )
    rows = [row for row in rows if row["time_us"] >= oldest_us]
    if not rows:
        raise missing
    if len(rows) > 1:
        raise _ambiguous(event_id, rows, argument)
    return rows[0]


def _check_source(source: str) -> None:
    if not source.strip():
        raise ValidationFailed.field("source", "source is empty; leave it out or name one")
    if len(source) > _MAX_SOURCE:
        raise ValidationFailed.field("source", f"a source is at most {_MAX_SOURCE} characters")
    if "\x00" in source:
        raise ValidationFailed.field(
            "source", "source contains a NUL character (\\u0000), which no event can hold"
        )


def _ambiguous(event_id: str, rows: list[dict[str, Any]], argument: str) -> ValidationFailed:
    """Several producers sent this id: say which, and how to name one."""
    sources = [row["source"] for row in rows]
    listed = ", ".join(f"{row['source']} ({row['type']})" for row in rows)
    more = " (and maybe more)" if len(rows) >= _MAX_CANDIDATES else ""
    message = (
        f"{argument} {event_id!r} names {len(rows)} events{more}, sent by different sources: "
        f"{listed}. Give source as well (source={sources[0]!r}, say)."
    )
    return ValidationFailed(
        message,
        details=[
            ErrorDetail(field="source", message=f"one of {', '.join(sources)}"),
        ],
    )
