"""get_metrics_around_event: did each metric of the event's service change after a change event?
(docs/metrics.md, "Did it change?")"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.errors import ValidationFailed
from trailmap.metrics.compare import Comparison, Summary, compare
from trailmap.metrics.points import DEFAULT_ENVIRONMENT
from trailmap.metrics.prometheus import DEFAULT_QUERIES, PrometheusConfig, PrometheusSource
from trailmap.metrics.series import STANDARD_METRICS, UNITS, Series, SeriesRequest
from trailmap.metrics.settings import AUTO, MetricSettings, read_settings
from trailmap.metrics.sources import PushedSource, SpansSource, span_step_minutes
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Database
from trailmap.storage import graph as graph_store
from trailmap.timeline.lookup import find_event
from trailmap.timeline.times import format_local_time, format_relative_us

__all__ = ["MIN_POINTS", "WINDOWS", "get_metrics_around_event"]

WINDOWS: dict[str, int] = {"1h": 1, "2h": 2, "4h": 4, "6h": 6, "12h": 12, "24h": 24}
MIN_POINTS = 10
_MAX_METRICS = 10
_HOUR_US = 3_600_000_000
_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_.:/-]{0,199}$")


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, max(0, 4 - math.floor(math.log10(abs(value)))))


def _summary(summary: Summary) -> dict[str, Any]:
    return {
        "points": summary.n,
        "mean": _round(summary.mean),
        "median": _round(summary.median),
        "p95": _round(summary.p95),
    }


def _metric_names(metrics: Sequence[str] | None) -> list[str]:
    if not metrics:
        return list(STANDARD_METRICS)
    if any(not m.strip() for m in metrics):
        # Dropping it silently would compare nothing, or fewer metrics than asked for.
        raise ValidationFailed.field(
            "metrics",
            "a metric name is empty; name each metric, or leave metrics out for the five "
            "standard ones",
        )
    names = list(dict.fromkeys(m.strip() for m in metrics))
    if len(names) > _MAX_METRICS:
        raise ValidationFailed.field("metrics", f"at most {_MAX_METRICS} metrics at a time")
    for name in names:
        if not _NAME.match(name):
            raise ValidationFailed.field("metrics", f"{name!r} is not a metric name")
    return names


async def _environment(db: Database, org_id: str, service: str, subject: str | None) -> str:
    """The event's subject; without one, the environment the service's data is in
    (production first), else `default`."""
    if subject:
        return subject
    nodes = await db.read(graph_store.node_rows, org_id)
    found = {row.environment for row in nodes if row.kind == "service" and row.name == service}
    for candidate in (DEFAULT_ENVIRONMENT, "production"):
        if candidate in found:
            return candidate
    return min(found) if len(found) == 1 else DEFAULT_ENVIRONMENT


def _prometheus(settings: MetricSettings, outbound: OutboundPolicy) -> PrometheusSource | None:
    prom = settings.prometheus
    if prom is None:
        return None
    header = (
        (prom.auth_header_name, prom.auth_header_value)
        if prom.auth_header_name and prom.auth_header_value
        else None
    )
    config = PrometheusConfig(
        base_url=prom.base_url,
        auth_header=header,
        queries={**DEFAULT_QUERIES, **prom.queries},
        timeout_seconds=prom.timeout_seconds,
    )
    return PrometheusSource(config, outbound=outbound)


async def get_metrics_around_event(
    db: Database,
    principal: Principal,
    event_id: str,
    *,
    source: str | None = None,
    window: str = "2h",
    metrics: Sequence[str] | None = None,
    outbound: OutboundPolicy,
    secret_key: str | None = None,
    default_timezone: str = "UTC",
    now: datetime | None = None,
    points: bool = False,
) -> dict[str, Any]:
    """Each metric before and after the event, compared. With `points`, each compared metric
    also carries its points as [seconds from the event, value] (the console draws them)."""
    now = now or clock.now()
    if window not in WINDOWS:
        raise ValidationFailed.field("window", f"one of {', '.join(WINDOWS)}")
    names = _metric_names(metrics)
    row = await find_event(db, principal, event_id, source=source, argument="event_id", now=now)
    now_us = clock.to_us(now)
    event_us: int = row["time_us"]
    service: str | None = row.get("service")
    span_us = WINDOWS[window] * _HOUR_US
    before = (event_us - span_us, event_us)
    after = (event_us, min(event_us + span_us, now_us))
    answer: dict[str, Any] = {
        "event": _event(row, now_us, default_timezone),
        "window": window,
        "before": _range(before, default_timezone),
        "after": _range(after, default_timezone) | {"complete": after[1] == event_us + span_us},
    }
    if not service:
        answer["metrics"] = [
            _missing(
                name,
                None,
                "the event names no service: send it with `service`, or a "
                "source such as //github.com/acme/checkout",
            )
            for name in names
        ]
        answer["summary"] = "The event names no service, so no metric can be compared."
        return answer
    org_id = principal.org_id
    environment = await _environment(db, org_id, service, row.get("subject"))
    answer["service"], answer["environment"] = service, environment
    settings = await read_settings(db, org_id, secret_key=secret_key)
    pushed = PushedSource(db, org_id)
    spans = SpansSource(db, org_id)
    prometheus = _prometheus(settings, outbound)
    # The event's age explains a short after side only while that side is still growing.
    age_s = max(0.0, (now_us - event_us) / 1e6) if after[1] < event_us + span_us else None

    found_pushed = await pushed.fetch_many(
        names, service=service, environment=environment, start_us=before[0], end_us=after[1]
    )
    span_rows: list[Any] = []
    # Spans are read only for a standard metric they may serve: chosen, or "auto" without
    # pushed points.
    if any(
        n in STANDARD_METRICS
        and (
            settings.source_for(n) == "spans"
            or (settings.source_for(n) == AUTO and n not in found_pushed)
        )
        for n in names
    ):
        span_rows = await spans.minutes(
            service=service, environment=environment, start_us=before[0], end_us=after[1]
        )
    step_minutes = span_step_minutes(
        sum(r[1] for r in span_rows),
        (before[1] - before[0]) // 60_000_000,
        max(1, (after[1] - after[0]) // 60_000_000),
        MIN_POINTS,
    )
    from_spans = spans.derive(
        span_rows,
        [n for n in names if n in STANDARD_METRICS],
        origin_us=event_us,
        step_minutes=step_minutes,
        end_us=after[1],
    )

    chosen, wanted_prometheus = _choose(names, settings, found_pushed, from_spans, prometheus)
    fetched = await _from_prometheus(
        prometheus, wanted_prometheus, SeriesRequest("", service, environment, before[0], after[1])
    )
    results: list[dict[str, Any]] = []
    for name in names:
        series = chosen[name] or fetched.get(name)
        if series is None:
            results.append(
                _missing(
                    name,
                    None,
                    f"no source has {name} for {service} ({environment}): push points to "
                    "/api/v1/metrics, send traces to /api/v1/otlp, or connect Prometheus",
                )
            )
            continue
        compared = _compared(
            series, event_us, age_s, step_minutes if series.source == "spans" else None
        )
        if points and series.error is None:
            compared["points"] = [
                [round((t - event_us) / 1e6, 3), v]
                for t, v in zip(series.times_us, series.values, strict=True)
            ]
        results.append(compared)
    answer["metrics"] = results
    answer["summary"] = _summary_text(answer)
    return answer


async def _from_prometheus(
    prometheus: PrometheusSource | None, names: list[str], window: SeriesRequest
) -> dict[str, Series]:
    """The names' series, asked of Prometheus at once; each fetch is bounded by its timeout."""
    fetched: dict[str, Series] = {}
    if prometheus is None or not names:
        return fetched

    async def one(name: str) -> None:
        fetched[name] = await prometheus.fetch(replace(window, name=name))

    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(one, name)
    return fetched


def _choose(
    names: Sequence[str],
    settings: MetricSettings,
    found_pushed: dict[str, Series],
    from_spans: dict[str, Series],
    prometheus: PrometheusSource | None,
) -> tuple[dict[str, Series | None], list[str]]:
    """Each metric's series from the source the organization chose for it ("auto": pushed
    points, else spans, else Prometheus); the names to ask Prometheus for come back apart."""
    chosen: dict[str, Series | None] = {}
    wanted_prometheus: list[str] = []
    for name in names:
        choice = settings.source_for(name)
        if choice == "pushed" or (choice == AUTO and name in found_pushed):
            chosen[name] = found_pushed.get(name) or Series(name, "pushed")
        elif choice == "spans" or (
            choice == AUTO and from_spans.get(name, Series(name, "")).values
        ):
            chosen[name] = from_spans.get(name) or Series(
                name, "spans", error=f"spans give only {', '.join(STANDARD_METRICS)}"
            )
        elif prometheus is not None and (
            choice == "prometheus" or name in prometheus.config.queries
        ):
            chosen[name] = None
            wanted_prometheus.append(name)
        elif choice == "prometheus":
            chosen[name] = Series(
                name, "prometheus", error="no Prometheus is configured for this organization"
            )
        else:
            chosen[name] = None
    return chosen, wanted_prometheus


def _split(series: Series, event_us: int) -> tuple[list[float], list[float]]:
    cut = bisect_left(series.times_us, event_us)  # the points are in time order
    return series.values[:cut], series.values[cut:]


def _compared(
    series: Series, event_us: int, age_s: float | None, step_minutes: int | None
) -> dict[str, Any]:
    if series.error is not None:
        return _missing(series.name, series.source, series.error)
    before, after = _split(series, event_us)
    result: Comparison = compare(before, after, min_points=MIN_POINTS, event_age_seconds=age_s)
    out: dict[str, Any] = {
        "name": series.name,
        "unit": UNITS.get(series.name),
        "source": series.source,
        "verdict": result.verdict,
        "reason": result.reason,
        "before": _summary(result.before),
        "after": _summary(result.after),
        "absolute_change": _round(result.absolute_change),
        "relative_change": _round(result.relative_change),
        "p_value": None if result.p_value is None else float(f"{result.p_value:.3g}"),
    }
    if step_minutes is not None:
        out["point_every"] = f"{step_minutes} min"
    return out


def _missing(name: str, source: str | None, why: str) -> dict[str, Any]:
    return {
        "name": name,
        "unit": UNITS.get(name),
        "source": source,
        "verdict": "not enough data",
        "reason": why,
    }


def _event(row: dict[str, Any], now_us: int, tz_name: str) -> dict[str, Any]:
    out = {
        "id": row["event_id"],
        "type": row["type"],
        "source": row["source"],
        "trailmap_id": row["id"],
        "time": _time(row["time_us"], tz_name),
        "time_relative": format_relative_us(now_us - row["time_us"]),
    }
    for name in ("service", "subject", "version", "description"):
        if row.get(name) is not None:
            out[name] = row[name]
    return out


def _time(time_us: int, tz_name: str) -> str:
    return format_local_time(clock.from_us(time_us).astimezone(ZoneInfo(tz_name)))


def _range(bounds: tuple[int, int], tz_name: str) -> dict[str, Any]:
    return {"from": _time(bounds[0], tz_name), "to": _time(bounds[1], tz_name)}


def _summary_text(answer: dict[str, Any]) -> str:
    event = answer["event"]
    head = f"{event['type']} of {answer['service']} ({answer['environment']})"
    if event.get("version"):
        head += f" {event['version']}"
    head += f", {event['time_relative']}:"
    parts = []
    for m in answer["metrics"]:
        if m["verdict"] in ("increased", "decreased"):
            before = _shown(m["before"]["mean"], m["unit"])
            after = _shown(m["after"]["mean"], m["unit"])
            parts.append(
                f"{m['name']} {m['verdict']} from {before} to {after} (mean; "
                f"p={m['p_value']}, {m['source']})"
            )
        else:
            parts.append(f"{m['name']}: {m['verdict']}")
    return head + " " + "; ".join(parts) + "."


def _shown(value: float | None, unit: str | None) -> str:
    """A figure as a person reads it: a ratio as a percentage, a latency in ms."""
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value * 100:.3g}%"
    if unit == "ms":
        return f"{value:.3g} ms"
    if unit == "requests/s":
        return f"{value:.3g}/s"
    return f"{value:.4g}"
