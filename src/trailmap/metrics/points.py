"""Metric points pushed to Trailmap (`POST /api/v1/metrics` and OTLP metrics): validated one by
one, stored once per series and time (docs/metrics.md, "Pushing points")."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from trailmap import clock
from trailmap.accounts import quotas
from trailmap.accounts.principal import Principal
from trailmap.errors import ErrorDetail, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import metrics as store
from trailmap.telemetry import count_points
from trailmap.timeline.times import TimeExpressionError, parse_event_time

__all__ = [
    "DEFAULT_ENVIRONMENT",
    "MAX_LABELS",
    "Point",
    "PushResult",
    "counted",
    "pushed_metric_names",
    "record_points",
    "series_id",
    "sort_points",
    "validate_point",
    "write_points",
]

DEFAULT_ENVIRONMENT = "default"
MAX_LABELS = 20
_MAX_NAME = 200
_MAX_SERVICE = 200
_MAX_SUBJECT = 50
_MAX_LABEL_KEY = 100
_MAX_LABEL_VALUE = 200
_FIELDS = frozenset({"name", "value", "time", "service", "subject", "labels"})
_NAMESPACE = uuid.UUID("2b0f1e0c-8d0e-4c52-9a57-3f3c2f6b9e21")


@dataclass(frozen=True, slots=True)
class Point:
    """One value of one series at one time."""

    name: str
    value: float
    time_us: int
    service: str = ""
    environment: str = DEFAULT_ENVIRONMENT
    labels: Mapping[str, str] = field(default_factory=dict)
    # "counter" for a running total (an OTLP cumulative monotonic sum), read back as a rate.
    kind: str = "gauge"


@dataclass(slots=True)
class PushResult:
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "counts": {"accepted": self.accepted, "rejected": len(self.rejected)},
            "rejected": self.rejected,
        }


def series_id(org_id: str, point: Point) -> str:
    labels = orjson.dumps(dict(point.labels), option=orjson.OPT_SORT_KEYS).decode()
    key = f"{org_id}\x1f{point.name}\x1f{point.service}\x1f{point.environment}\x1f{labels}"
    return str(uuid.uuid5(_NAMESPACE, key))


def _text(
    obj: Mapping[str, Any], name: str, limit: int, problems: list[tuple[str, str]]
) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append((name, f"{name} must be a non-empty string"))
        return None
    if len(value) > limit:
        problems.append((name, f"{name} is {len(value)} characters; at most {limit} are allowed"))
        return None
    if any(ord(ch) < 32 for ch in value):
        problems.append((name, f"{name} must not contain control characters"))
        return None
    return value


def _labels(obj: Mapping[str, Any], problems: list[tuple[str, str]]) -> dict[str, str]:
    raw = obj.get("labels")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(("labels", "labels must be an object of strings"))
        return {}
    if len(raw) > MAX_LABELS:
        problems.append(("labels", f"{len(raw)} labels; at most {MAX_LABELS} are allowed"))
        return {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not key or len(key) > _MAX_LABEL_KEY or any(ord(ch) < 32 for ch in key):
            problems.append(
                (
                    "labels",
                    (
                        f"a label name must have 1 to {_MAX_LABEL_KEY} characters and no "
                        "control characters"
                    ),
                )
            )
        elif isinstance(value, str) and "\x00" in value:
            problems.append((f"labels.{key}", "must not contain NUL characters"))
        elif not isinstance(value, str | int | float | bool) or len(str(value)) > _MAX_LABEL_VALUE:
            problems.append(
                (f"labels.{key}", f"must be a string of at most {_MAX_LABEL_VALUE} characters")
            )
        else:
            out[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return out


def validate_point(item: object, *, index: int, now: datetime) -> Point | list[ErrorDetail]:
    """A Point, or every problem with the item (each naming its field)."""
    if not isinstance(item, dict):
        return [ErrorDetail(field=None, index=index, message="each point must be a JSON object")]
    problems: list[tuple[str, str]] = []
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        problems.append(
            (unknown[0], f"unknown field {unknown[0]!r}; a point has {', '.join(sorted(_FIELDS))}")
        )
    name = _text(item, "name", _MAX_NAME, problems)
    if name is None and "name" not in item:
        problems.append(("name", 'name is required, e.g. "error_rate"'))
    value = item.get("value")
    number: float | None = None
    if value is None:
        problems.append(("value", "value is required: a number"))
    elif isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(("value", "value must be a number"))
    elif not math.isfinite(value) or abs(value) > 1e300:
        problems.append(("value", "value must be a finite number"))
    else:
        number = float(value)
    time_us: int | None = None
    raw_time = item.get("time")
    if raw_time is None:
        problems.append(("time", 'time is required: an RFC 3339 time with a zone, or "NOW"'))
    elif not isinstance(raw_time, str):
        problems.append(("time", "time must be a string"))
    else:
        try:
            time_us = clock.to_us(parse_event_time(raw_time, now=now))
        except TimeExpressionError as error:
            problems.append(("time", str(error)))
    service = _text(item, "service", _MAX_SERVICE, problems)
    subject = _text(item, "subject", _MAX_SUBJECT, problems)
    labels = _labels(item, problems)
    if problems or name is None or number is None or time_us is None:
        return [ErrorDetail(field=f, index=index, message=m) for f, m in problems]
    return Point(
        name=name,
        value=number,
        time_us=time_us,
        service=service or "",
        environment=subject or DEFAULT_ENVIRONMENT,
        labels=labels,
    )


async def record_points(
    db: Database,
    principal: Principal,
    items: Sequence[object] | Sequence[Point],
    *,
    now: datetime | None = None,
) -> PushResult:
    """Store the valid points among `items`; nothing valid is dropped for a neighbour's sake.

    Points older than the organization's retention window are refused: they could never be
    asked for."""
    now = now or clock.now()
    result, valid, indexes = sort_points(principal, items, now=now)
    refused: list[ErrorDetail] = []
    if valid:
        refused = await db.write(write_points, principal, valid, indexes, now)
    return counted(result, valid, refused)


def sort_points(
    principal: Principal, items: Sequence[object] | Sequence[Point], *, now: datetime
) -> tuple[PushResult, list[Point], list[int]]:
    """The points among `items` to store with the index of each, and the refusals of the
    others (`record_points` before its write, for a caller that writes in a transaction of
    its own)."""
    principal.require_write()
    oldest_us = clock.to_us(now - timedelta(days=principal.retention_days))
    newest_us = clock.to_us(now + timedelta(days=1))
    result = PushResult()
    valid: list[Point] = []
    indexes: list[int] = []
    for index, item in enumerate(items):
        point = item if isinstance(item, Point) else validate_point(item, index=index, now=now)
        if isinstance(point, list):
            result.rejected.extend(_rejection(detail) for detail in point)
        elif not oldest_us <= point.time_us <= newest_us:
            why = (
                f"older than this organization's retention window of {principal.retention_days}"
                " days"
                if point.time_us < oldest_us
                else "more than a day in the future"
            )
            result.rejected.append(
                _rejection(ErrorDetail(field="time", index=index, message=f"time is {why}"))
            )
        else:
            valid.append(point)
            indexes.append(index)
    return result, valid, indexes


def counted(result: PushResult, valid: list[Point], refused: list[ErrorDetail]) -> PushResult:
    """`result`, once `valid` are written but for the `refused` (the plan's limits): counted
    as accepted or rejected, and for `/metrics`."""
    result.rejected.extend(_rejection(detail) for detail in refused)
    result.rejected.sort(key=lambda r: r["index"])
    result.accepted = len(valid) - len(refused)
    count_points(accepted=result.accepted, rejected=len({r["index"] for r in result.rejected}))
    return result


async def pushed_metric_names(
    db: Database, principal: Principal, *, service: str, environment: str
) -> list[str]:
    """The names of the metrics pushed for `service` in `environment`."""
    for name, value in (("service", service), ("subject", environment)):
        if any(ord(ch) < 32 for ch in value):
            raise ValidationFailed.field(name, "must not contain control characters")
    names: list[str] = await db.read(
        store.series_names, principal.org_id, service=service, environment=environment
    )
    return names


def _rejection(detail: ErrorDetail) -> dict[str, Any]:
    return {
        "index": detail.index,
        "code": detail.code,
        "field": detail.field,
        "message": detail.message,
    }


def write_points(
    conn: Connection, principal: Principal, points: list[Point], indexes: list[int], now: datetime
) -> list[ErrorDetail]:
    """Store valid points (`sort_points`), in the caller's transaction, within the plan's
    series and daily points; what those refuse is returned, by its item's index."""
    org_id, plan, now_us = principal.org_id, principal.plan, clock.to_us(now)
    series: dict[str, dict[str, Any]] = {}
    # The last value sent for a series and time wins, within a request as across requests.
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    ids: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], str] = {}
    by_point: list[str] = []
    for point in points:
        key = (point.name, point.service, point.environment, tuple(sorted(point.labels.items())))
        sid = ids.get(key)
        if sid is None:
            sid = ids[key] = series_id(org_id, point)
            series[sid] = {
                "series_id": sid,
                "name": point.name,
                "service": point.service,
                "environment": point.environment,
                "labels": dict(point.labels),
                "kind": point.kind,
                "created_us": now_us,
            }
        by_point.append(sid)
    refused: list[ErrorDetail] = []
    over: set[str] = set()
    if plan.series is not None:
        fresh = store.new_series(conn, org_id, list(series))
        room = max(0, plan.series - store.count_series(conn, org_id)) if fresh else 0
        over = set(fresh[room:])
    why_series = (
        f"the {plan.name} plan keeps at most {plan.series} metric series and this one would be "
        "new; use fewer label values, or change plan"
    )
    kept: list[tuple[int, Point, str]] = []
    for index, point, sid in zip(indexes, points, by_point, strict=True):
        if sid in over:
            refused.append(ErrorDetail(None, why_series, index=index, code="QUOTA_EXCEEDED"))
        else:
            kept.append((index, point, sid))
    granted = quotas.check_and_count(conn, org_id, plan, "metric_points", len(kept), now)
    if granted < len(kept):
        why = quotas.refusal(plan, "metric_points", conn, org_id, now).message
        refused.extend(
            ErrorDetail(None, why, index=index, code="QUOTA_EXCEEDED")
            for index, _point, _sid in kept[granted:]
        )
        kept = kept[:granted]
    for _index, point, sid in kept:
        rows[(sid, point.time_us)] = {
            "series_id": sid,
            "time_us": point.time_us,
            "value": point.value,
        }
    wanted = {sid for _index, _point, sid in kept}
    store.add_series(conn, org_id, [row for sid, row in series.items() if sid in wanted])
    store.add_points(conn, org_id, list(rows.values()))
    return refused
