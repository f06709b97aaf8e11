"""The change event: a CloudEvents 1.0 object checked against every rule in
docs/interfaces.md, each problem reported by field and index."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from trailmap import clock, ids
from trailmap.errors import ErrorDetail
from trailmap.timeline import cdevents
from trailmap.timeline.times import TimeExpressionError, parse_event_time

__all__ = [
    "CORE_ATTRIBUTES",
    "DETECTED_SOURCE_PREFIX",
    "SEVERITIES",
    "EventRow",
    "derive_service",
    "validate_event",
]

SEVERITIES: Final = ("LOW", "MINOR", "MAJOR", "CRITICAL")
# The source of a deployment Trailmap detected itself (a new service.version in traces):
# `otel://<service>`.
DETECTED_SOURCE_PREFIX: Final = "otel://"

CORE_ATTRIBUTES: Final = frozenset(
    {
        "specversion",
        "type",
        "source",
        "time",
        "id",
        "subject",
        "severity",
        "version",
        "service",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
    }
)

# (attribute, most characters)
_LIMITS: Final = {
    "type": 100,
    "source": 500,
    "id": 200,
    "subject": 50,
    "version": 50,
    "service": 200,
    "datacontenttype": 200,
    "dataschema": 500,
}
_MAX_DESCRIPTION = 1000
_MAX_ORIGINAL_TYPE = 200
# CloudEvents: extension names are lower-case ASCII letters and digits, 20 characters at most.
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_NO_SPACE = re.compile(r"^[^\s\x00-\x1f\x7f]+$")
_DIGITS = re.compile(r"^\d+$")


@dataclass(slots=True)
class EventRow:
    """A valid event, as a row for the events table (without `org_id`)."""

    values: dict[str, Any]
    index: int

    @property
    def key(self) -> tuple[str, str]:
        return self.values["source"], self.values["event_id"]


@dataclass(slots=True)
class _Problems:
    index: int
    items: list[ErrorDetail] = field(default_factory=list)

    def add(self, field_name: str | None, message: str) -> None:
        self.items.append(ErrorDetail(field=field_name, message=message, index=self.index))


# A producer sends many events from few sources, and parsing the URL was a tenth of the time
# spent validating a batch; the answer depends on the source alone.
@lru_cache(maxsize=4096)
def derive_service(source: str) -> str | None:
    """The service a source names: its last meaningful path segment, else its host.

    `//github.com/acme/checkout` -> `checkout`; `https://ci.example.com/` -> `ci.example.com`.
    """
    try:
        parts = urlsplit(source)
    except ValueError:
        return None
    segments = [s for s in parts.path.split("/") if s and not _DIGITS.match(s)]
    if segments:
        name = segments[-1]
        return name.removesuffix(".git")[:200] or None
    return (parts.hostname or None) if parts.netloc else None


def _string(
    obj: Mapping[str, Any], name: str, problems: _Problems, *, required: bool = False
) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            problems.add(name, f"{name} is required")
        return None
    if not isinstance(value, str):
        problems.add(name, f"{name} must be a string, not {_json_kind(value)}")
        return None
    if required and not value.strip():
        problems.add(name, f"{name} must not be empty")
        return None
    limit = _LIMITS.get(name)
    if limit is not None and len(value) > limit:
        problems.add(name, f"{name} is {len(value)} characters; at most {limit} are allowed")
        return None
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else "a string"


def validate_event(
    item: object, *, index: int, now: datetime, max_bytes: int
) -> EventRow | list[ErrorDetail]:
    problems = _Problems(index)
    if not isinstance(item, dict):
        problems.add(None, f"each event must be a JSON object, not {_json_kind(item)}")
        return problems.items
    obj: dict[str, Any] = item
    if cdevents.is_raw_cdevent(obj):
        obj = cdevents.cdevent_to_cloudevent(obj)

    try:
        encoded = orjson.dumps(obj)
    except TypeError as error:
        problems.add(None, _unstorable(error))
        return problems.items
    if len(encoded) > max_bytes:
        problems.items.append(
            ErrorDetail(
                field=None,
                message=(
                    f"the event is {len(encoded)} bytes; a single event may be at most "
                    f"{max_bytes}: move bulky data elsewhere and link to it"
                ),
                index=index,
                code="PAYLOAD_TOO_LARGE",
            )
        )
        return problems.items
    if b"\\u0000" in encoded:
        problems.add(None, "the event contains a NUL character (\\u0000), which cannot be stored")
        return problems.items

    specversion = obj.get("specversion")
    if specversion is None:
        problems.add("specversion", 'specversion is required; set it to "1.0"')
    elif specversion != "1.0":
        problems.add(
            "specversion", f'specversion must be "1.0" (CloudEvents 1.0), not {specversion!r}'
        )

    event_type = _type(obj, problems)
    source = _string(obj, "source", problems, required=True)
    if source is not None and not _NO_SPACE.match(source):
        problems.add(
            "source",
            "source must be a URI-reference without spaces, such as //github.com/acme/checkout",
        )
        source = None
    when = _time(obj, problems, now)

    event_id = _string(obj, "id", problems)
    if event_id is not None and not event_id.strip():
        problems.add("id", "id must not be empty; leave it out to have one generated")
    subject = _string(obj, "subject", problems)
    version = _string(obj, "version", problems)
    service = _string(obj, "service", problems)
    datacontenttype = _string(obj, "datacontenttype", problems)
    dataschema = _string(obj, "dataschema", problems)
    severity = _severity(obj, problems)
    data, data_base64, description = _data(obj, problems)
    extensions = _extensions(obj, problems)

    if problems.items or event_type is None or source is None or when is None:
        return problems.items

    original_type: str | None = None
    mapped = cdevents.map_cdevents_type(event_type)
    if mapped is not None:
        original_type, event_type = event_type, mapped
        if isinstance(data, dict) and cdevents.is_raw_cdevent(data):
            found = cdevents.extract_fields(data)
            subject = subject or _clip(found.subject, 50)
            service = service or _clip(found.service, 200)
            version = version or _clip(found.version, 50)
            description = description or _clip(found.description, _MAX_DESCRIPTION)
            severity = severity or found.severity
    service = service or derive_service(source)
    row = {
        "id": ids.new_time_ordered_id(),
        "source": source,
        "event_id": event_id or ids.new_id(),
        "type": event_type,
        "original_type": original_type,
        "subject": subject,
        "severity": severity,
        "version": version,
        "service": service,
        "time_us": clock.to_us(when),
        "received_us": clock.to_us(now),
        "datacontenttype": datacontenttype,
        "dataschema": dataschema,
        "data": data,
        "data_base64": data_base64,
        "description": description,
        "extensions": extensions,
        "search_text": " ".join(
            v.lower() for v in (event_type, source, subject, service, version, description) if v
        ),
        # Set by the guardrail check as the event is stored (a deployment against a rule).
        "violations": None,
    }
    return EventRow(values=row, index=index)


def _unstorable(error: TypeError) -> str:
    """Why orjson could not encode an event the lenient JSON parser let through."""
    reason = str(error)
    if "surrogate" in reason:
        return (
            "the event holds text that is not valid Unicode (a lone surrogate such as "
            "\\ud800); send UTF-8 text"
        )
    if "ecursion" in reason:
        return "the event is nested too deeply; keep data to fewer than 250 levels"
    return "the event holds a number too large to store (over 64 bits)"


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


def _type(obj: Mapping[str, Any], problems: _Problems) -> str | None:
    value = obj.get("type")
    if isinstance(value, str) and cdevents.is_cdevents_type(value):
        if len(value) > _MAX_ORIGINAL_TYPE:
            problems.add(
                "type", f"type is {len(value)} characters; at most {_MAX_ORIGINAL_TYPE} are allowed"
            )
            return None
        return value
    return _string(obj, "type", problems, required=True)


def _time(obj: Mapping[str, Any], problems: _Problems, now: datetime) -> datetime | None:
    value = obj.get("time")
    if value is None:
        problems.add(
            "time",
            'time is required: an RFC 3339 time with a zone such as 2026-11-20T10:00:00Z, or "NOW"',
        )
        return None
    if not isinstance(value, str):
        problems.add("time", f"time must be a string, not {_json_kind(value)}")
        return None
    try:
        return parse_event_time(value, now=now)
    except TimeExpressionError as error:
        problems.add("time", str(error))
        return None


def _severity(obj: Mapping[str, Any], problems: _Problems) -> str | None:
    value = obj.get("severity")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().upper() in SEVERITIES:
        return value.strip().upper()
    problems.add("severity", f"severity must be one of {', '.join(SEVERITIES)}, not {value!r}")
    return None


def _data(obj: Mapping[str, Any], problems: _Problems) -> tuple[Any, str | None, str | None]:
    data = obj.get("data")
    data_base64 = obj.get("data_base64")
    if data is not None and data_base64 is not None:
        problems.add("data_base64", "send either data or data_base64, not both")
        return None, None, None
    if data_base64 is not None and not isinstance(data_base64, str):
        problems.add("data_base64", "data_base64 must be a base64 string")
        return None, None, None
    description: str | None = None
    if isinstance(data, dict) and "description" in data:
        value = data["description"]
        if value is not None and not isinstance(value, str):
            problems.add("data.description", "data.description must be a string")
        elif value is not None and len(value) > _MAX_DESCRIPTION:
            problems.add(
                "data.description",
                f"data.description is {len(value)} characters; at most {_MAX_DESCRIPTION} are "
                "allowed",
            )
        else:
            description = value or None
    return data, data_base64, description


def _extensions(obj: Mapping[str, Any], problems: _Problems) -> dict[str, Any] | None:
    found: dict[str, Any] = {}
    for name, value in obj.items():
        if name in CORE_ATTRIBUTES or value is None:
            continue
        if not _EXTENSION_NAME.match(name):
            problems.add(
                name,
                f"unknown attribute {name!r}: CloudEvents extension names use only lower-case "
                "letters and digits, at most 20 (put other fields inside data)",
            )
            continue
        if isinstance(value, dict | list):
            problems.add(
                name,
                f"extension {name!r} must be a string, number or boolean; put structures "
                "inside data",
            )
            continue
        found[name] = value
    return found or None
