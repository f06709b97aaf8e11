"""Pydantic models that document the HTTP API's shapes in /openapi.json, for clients only:
handlers validate and render without them (docs/internals.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CloudEventIn",
    "EventBody",
    "EventOut",
    "EventPageBody",
    "IngestBody",
    "SummaryBody",
]


class CloudEventIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    type: str = Field(max_length=100, examples=["deployment"])
    source: str = Field(max_length=500, examples=["//github.com/acme/checkout"])
    time: str = Field(
        description='RFC 3339 / ISO 8601 or RFC 2822 with a time zone, or "NOW"',
        examples=["2026-11-20T10:00:00Z", "NOW"],
    )
    id: str | None = Field(default=None, max_length=200)
    subject: str | None = Field(default=None, max_length=50, examples=["production"])
    severity: Literal["LOW", "MINOR", "MAJOR", "CRITICAL"] | None = None
    version: str | None = Field(default=None, max_length=50, examples=["v1.4.2"])
    service: str | None = Field(default=None, max_length=200, examples=["checkout"])
    datacontenttype: str | None = Field(default=None, max_length=200)
    dataschema: str | None = Field(default=None, max_length=500)
    data: Any = Field(
        default=None, description="Any JSON; data.description at most 1,000 characters"
    )


class EventOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    specversion: Literal["1.0"]
    type: str
    source: str
    event_id: str
    time: str
    time_relative: str
    subject: str | None = None
    service: str | None = None
    version: str | None = None
    severity: str | None = None
    description: str | None = None
    original_type: str | None = None
    received: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = None
    data_base64: str | None = None
    extensions: dict[str, Any] | None = None
    also_reported_by: list[str] | None = Field(
        default=None,
        description="The sources that also reported this change (a deployment seen in traces)",
    )


class ItemResult(BaseModel):
    index: int
    id: str | None
    source: str
    event_id: str


class ItemRejected(BaseModel):
    index: int
    code: str
    message: str
    field: str | None = None


class Counts(BaseModel):
    accepted: int
    duplicates: int
    rejected: int


class IngestData(BaseModel):
    counts: Counts
    accepted: list[ItemResult]
    duplicates: list[ItemResult]
    rejected: list[ItemRejected]


class IngestBody(BaseModel):
    success: Literal[True]
    data: IngestData


class RangeOut(BaseModel):
    from_: str = Field(alias="from")
    to: str
    timezone: str
    oldest_queryable: str
    note: str | None = None


class UnmatchedValue(BaseModel):
    filter: Literal["type", "subject", "service", "source"] = Field(
        description="The query parameter"
    )
    value: str = Field(description="The asked value, which no event of the organization has")
    closest: list[str] = Field(description="The existing values it most likely meant")


class TypeCount(BaseModel):
    value: str
    count: int


class InRange(BaseModel):
    total: int = Field(description="Changes in the range, whatever the filters")
    by_type: list[TypeCount]


class EmptyHint(BaseModel):
    """Why a filtered query found nothing, and what there is instead."""

    unmatched: list[UnmatchedValue]
    in_range: InRange


class EventPageData(BaseModel):
    events: list[EventOut]
    next_cursor: str | None
    range: RangeOut
    hint: EmptyHint | None = Field(
        default=None, description="On an empty answer to a filtered query: what exists instead"
    )


class EventPageBody(BaseModel):
    success: Literal[True]
    data: EventPageData


class EventBody(BaseModel):
    success: Literal[True]
    data: EventOut


class FacetOut(BaseModel):
    value: str
    count: int
    last_seen: str
    last_seen_relative: str


class SummaryData(BaseModel):
    total: int
    by_type: list[FacetOut]
    by_subject: list[FacetOut]
    by_source: list[FacetOut]
    by_severity: list[FacetOut]
    latest: list[EventOut]
    range: RangeOut


class SummaryBody(BaseModel):
    success: Literal[True]
    data: SummaryData
